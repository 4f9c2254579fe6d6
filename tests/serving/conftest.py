"""Gateway tests run the real thing: uvicorn web processes (controlplane.asgi), real engine
replicas, PostgreSQL and Redis. Objects are created through the control-plane services, in
committed transactions (transactional_db) so the web subprocesses see them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


@pytest.fixture
def own_engine() -> Iterator[EngineProcess]:
    """An engine only this test talks to, so its metrics show this test's generation alone."""
    with spawn_engine("default", extra_args=ENGINE_ARGS) as process:
        yield process


def engine_metric(engine: EngineProcess, name: str) -> float:
    """The sum of a metric's samples on the engine's /metrics."""
    import re
    import urllib.request

    with urllib.request.urlopen(f"{engine.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, flags=re.M)
    return sum(float(v) for v in values)


@pytest.fixture(scope="session")
def web(django_db_setup: None) -> Iterator[WebProcess]:
    """One gateway web process for the whole session (its caches follow pub/sub invalidation)."""
    process = spawn_web(subprocess_env())
    yield process
    process.stop()


@pytest.fixture
def two_webs(django_db_setup: None) -> Iterator[list[WebProcess]]:
    """Two gateway processes on the same database and Redis: what holds across them holds across N."""
    env = subprocess_env()
    webs = [spawn_web(env), spawn_web(env)]
    yield webs
    for process in webs:
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
    hf_repo_id: str = "switchboard/demo-random-llama",
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
        hf_repo_id=hf_repo_id,
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


@contextmanager
def fake_openai_backend(*, prompt_tokens: int, completion_tokens: int) -> Iterator[str]:
    """FAULT INJECTION ONLY: an OpenAI-compatible server whose answers report the given token
    counts whatever the request was (a misbehaving or differently-tokenizing backend). Yields the
    API base URL (".../v1")."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answer = json.dumps(
        {
            "id": "fake",
            "object": "chat.completion",
            "created": 0,
            "model": "fake",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # health checks: GET /v1/models
            self._send(b'{"object":"list","data":[]}')

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._send(answer)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
