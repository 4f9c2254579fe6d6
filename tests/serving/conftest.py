"""Gateway tests run the real thing: uvicorn web processes (controlplane.asgi), real engine
replicas, PostgreSQL and Redis. Objects are created through the control-plane services, in
committed transactions (transactional_db) so the web subprocesses see them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from serving.engine.launcher import EngineProcess, spawn_engine
from tests.conftest import subprocess_env
from tests.support import WebProcess, spawn_web

ENGINE_ARGS = ["--max-concurrent-requests", "128", "--max-total-tokens", "1024"]


@pytest.fixture(scope="session")
def engine() -> Iterator[EngineProcess]:
    with spawn_engine("default", extra_args=[*ENGINE_ARGS, "--embedding-model", "default"]) as process:
        yield process


@pytest.fixture(scope="session")
def web(django_db_setup: None) -> Iterator[WebProcess]:
    """One gateway web process for the whole session (its caches follow pub/sub invalidation)."""
    process = spawn_web(subprocess_env())
    yield process
    process.stop()


@dataclass
class Deployment:
    team: Any
    backend: Any
    model: Any
    release: Any
    endpoint: Any
    key: Any
    secret: str


def actor() -> Any:
    from controlplane.services.audit import Actor

    return Actor.system("test")


def deploy(
    urls: list[str],
    *,
    name: str = "chat",
    kind: str = "engine",
    price_in: str = "0.10",
    price_out: str = "0.20",
    team: Any = None,
    key_kwargs: dict[str, Any] | None = None,
    backend_settings: dict[str, Any] | None = None,
    context_window: int = 1024,
    served_model_name: str = "",
) -> Deployment:
    """A team (unless given) with one backend, model version, release, endpoint and inference key."""
    from controlplane.services.backends import ReplicaSpec, backend_create
    from controlplane.services.catalog import model_version_create
    from controlplane.services.endpoints import TrafficEntry, endpoint_create
    from controlplane.services.keys import api_key_create
    from controlplane.services.releases import release_create
    from controlplane.services.teams import team_create

    if team is None:
        import uuid

        slug = f"t-{uuid.uuid4().hex[:10]}"
        team = team_create(name=slug, slug=slug, actor=actor())
    backend = backend_create(
        team=team,
        name=f"{name}-backend",
        kind=kind,
        actor=actor(),
        replicas=[ReplicaSpec(url=u) for u in urls],
        settings={
            "max_concurrency": 1000,
            "first_token_timeout_s": 20.0,
            "circuit_cooldown_s": 30,
            "circuit_failure_threshold": 3,
            **(backend_settings or {}),
        },
    )
    model = model_version_create(
        team=team,
        name=f"{name}-model",
        backend=backend,
        actor=actor(),
        hf_repo_id="switchboard/demo-random-llama",
        hf_revision="0" * 40,
        context_window=context_window,
        served_model_name=served_model_name or "demo",
        input_price_per_mtok=Decimal(price_in),
        output_price_per_mtok=Decimal(price_out),
    )
    release = release_create(team=team, name=f"{name}-v1", model_version=model, actor=actor())
    endpoint = endpoint_create(team=team, name=name, actor=actor(), traffic=[TrafficEntry(release, 100)])
    key, secret = api_key_create(
        team=team, name=f"{name}-key", scopes=["inference"], actor=actor(), **(key_kwargs or {})
    )
    return Deployment(team, backend, model, release, endpoint, key, secret)


def wait_for(predicate: Any, *, timeout: float = 30.0, interval: float = 0.1) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(interval)
