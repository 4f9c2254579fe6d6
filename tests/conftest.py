"""Shared fixtures. The suite runs against the real services `make test` starts (or the ones
DATABASE_URL / REDIS_URL name): PostgreSQL with pgvector, Redis, Celery workers, the engine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for child processes (workers, web replicas) that must see the test database."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SWITCHBOARD_ENV": "test"}
    env["DATABASE_URL"] = f"postgres://{db['USER']}@{_quote(db['HOST'])}/{db['NAME']}"
    if db.get("PORT"):
        env["DATABASE_URL"] = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env.update(extra)
    return env


def _quote(host: str) -> str:
    from urllib.parse import quote

    return quote(host, safe="")


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup: None, django_db_blocker: object) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker in its own process, consuming from the real broker."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "controlplane", "worker", "--pool", "solo",
         "--loglevel", "WARNING", "-n", f"test-{os.getpid()}@%h"],
        cwd=REPO_ROOT,
        env=subprocess_env(),
    )
    from controlplane.celery import app

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if app.control.ping(timeout=0.5):
            break
        if proc.poll() is not None:
            raise RuntimeError("celery worker exited during start")
    else:
        proc.kill()
        raise RuntimeError("celery worker did not answer ping within 60s")
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
