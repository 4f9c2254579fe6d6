"""Engines started as real subprocesses, shared by the whole engine suite.

No Django and no database: these tests only speak HTTP to `python -m serving.engine`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serving.engine.launcher import EngineProcess, spawn_engine


@pytest.fixture(scope="session")
def engine() -> Iterator[EngineProcess]:
    """The demo model with embeddings, roomy limits: the engine most tests talk to."""
    with spawn_engine(
        "default",
        extra_args=[
            "--embedding-model",
            "default",
            "--max-concurrent-requests",
            "64",
            "--max-total-tokens",
            "1024",
        ],
    ) as process:
        yield process


@pytest.fixture(scope="session")
def small_engine() -> Iterator[EngineProcess]:
    """Two permits only, for overload and cancellation tests that must own the whole engine."""
    with spawn_engine(
        "default", extra_args=["--max-concurrent-requests", "2", "--max-total-tokens", "1024"]
    ) as process:
        yield process


@pytest.fixture(scope="session")
def engine_url(engine: EngineProcess) -> str:
    return engine.url
