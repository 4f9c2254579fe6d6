"""Celery tasks of the gateway: draining usage records into the ledger, and the sweeper."""

from __future__ import annotations

from celery import shared_task

from serving import usage


@shared_task(name="serving.usage_drain", ignore_result=True)
def usage_drain() -> int:
    """Moves queued usage records into the database, batch by batch, exactly once."""
    return usage.drain()


@shared_task(name="serving.usage_sweep", ignore_result=True)
def usage_sweep(older_than_s: float = usage.VISIBILITY_TIMEOUT_S) -> int:
    """Requeues batches a dead worker left claimed, then drains them."""
    moved = usage.sweep(older_than_s=older_than_s)
    if moved:
        usage.drain()
    return moved
