"""Shared fixtures. The suite runs against the real services `make test` starts (or the ones
DATABASE_URL / REDIS_URL name): PostgreSQL with pgvector, Redis, Celery workers, the engine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for child processes (workers, web replicas) that must see the test database."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SWITCHBOARD_ENV": "test"}
    env["DATABASE_URL"] = f"postgres://{db['USER']}@{_quote(db['HOST'])}/{db['NAME']}"
    if db.get("PORT"):
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        )
    env.update(extra)
    return env


def _quote(host: str) -> str:
    from urllib.parse import quote

    return quote(host, safe="")


@pytest.fixture(scope="session")
def celery_worker_process(
    django_db_setup: None, django_db_blocker: object
) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker in its own process, consuming from the real broker."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "controlplane",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
            "-n",
            f"test-{os.getpid()}@%h",
        ],
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


# --- Team, members and clients: the generic fixtures every management test uses -------------------
# One team with one user per role, plus an outsider who belongs to another team. Clients are DRF
# APIClients logged in by session (CSRF is not enforced by the test client).


@pytest.fixture
def team(db: None) -> Any:
    from tests.factories import TeamFactory

    return TeamFactory(name="Acme", slug="acme")


@pytest.fixture
def other_team(db: None) -> Any:
    from tests.factories import TeamFactory

    return TeamFactory(name="Globex", slug="globex")


def _member(team: Any, username: str, role: str) -> Any:
    from tests.factories import MembershipFactory, UserFactory

    user = UserFactory(username=username)
    MembershipFactory(team=team, user=user, role=role)
    return user


@pytest.fixture
def owner(team: Any) -> Any:
    return _member(team, "olivia-owner", "owner")


@pytest.fixture
def team_admin(team: Any) -> Any:
    return _member(team, "adam-admin", "admin")


@pytest.fixture
def member(team: Any) -> Any:
    """A developer: may change the team's objects, not its membership."""
    return _member(team, "dev-member", "developer")


@pytest.fixture
def viewer(team: Any) -> Any:
    return _member(team, "vic-viewer", "viewer")


@pytest.fixture
def outsider(other_team: Any) -> Any:
    """Owner of another team: sees nothing of `team`."""
    return _member(other_team, "otto-outsider", "owner")


def _client_for(user: Any) -> Any:
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def owner_client(owner: Any) -> Any:
    return _client_for(owner)


@pytest.fixture
def team_admin_client(team_admin: Any) -> Any:
    return _client_for(team_admin)


@pytest.fixture
def member_client(member: Any) -> Any:
    return _client_for(member)


@pytest.fixture
def viewer_client(viewer: Any) -> Any:
    return _client_for(viewer)


@pytest.fixture
def outsider_client(outsider: Any) -> Any:
    return _client_for(outsider)


@pytest.fixture
def management_key(team: Any) -> tuple[Any, str]:
    """(ApiKey, secret) with management read+write scopes in `team`."""
    from controlplane.services.audit import Actor
    from controlplane.services.keys import api_key_create

    return api_key_create(
        team=team,
        name="ci-management",
        scopes=["management:read", "management:write"],
        actor=Actor.system("test"),
    )


@pytest.fixture
def management_key_client(management_key: tuple[Any, str]) -> Any:
    """An APIClient authenticated by `Authorization: Bearer <management key>` (no session)."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {management_key[1]}")
    return client
