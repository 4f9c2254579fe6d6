"""Celery tasks of the core app."""

from celery import shared_task


@shared_task(name="controlplane.ping")
def ping(payload: str) -> dict[str, str]:
    """Round-trip probe: proves a worker consumed from the broker and wrote to the result backend."""
    import os

    return {"echo": payload, "worker_pid": str(os.getpid())}
