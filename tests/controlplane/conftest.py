"""A populated team (`world`) for the control-plane API tests: one of everything, owned by `team`,
plus a mirror in `other_team` that `team`'s members must never see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from controlplane.services.audit import Actor
from controlplane.services.endpoints import TrafficEntry, endpoint_set_traffic
from controlplane.services.keys import api_key_create
from tests.factories import (
    BackendFactory,
    BackendReplicaFactory,
    BudgetFactory,
    EndpointFactory,
    ModelVersionFactory,
    ReleaseFactory,
    UserFactory,
)

# Nothing listens on port 9 (discard) here: a probe of it is refused at once.
UNREACHABLE_URL = "http://127.0.0.1:9"


@dataclass
class World:
    team: Any
    backend: Any
    model_version: Any
    release: Any
    release_b: Any
    endpoint: Any
    key: Any
    key_secret: str
    budget: Any
    viewer_membership: Any
    outsider_user: Any


def build_world(team: Any, creator: Any) -> World:
    actor = Actor.system("fixture")
    backend = BackendFactory(team=team, name="tgi-main")
    BackendReplicaFactory(backend=backend, url=UNREACHABLE_URL)
    model_version = ModelVersionFactory(team=team, backend=backend, name="tiny@1")
    release = ReleaseFactory(team=team, model_version=model_version, name="r1")
    release_b = ReleaseFactory(team=team, model_version=model_version, name="r2")
    endpoint = EndpointFactory(team=team, name="chat")
    endpoint_set_traffic(endpoint=endpoint, traffic=[TrafficEntry(release, 100)], actor=actor)
    endpoint_set_traffic(endpoint=endpoint, traffic=[TrafficEntry(release_b, 100)], actor=actor)
    key, secret = api_key_create(
        team=team,
        name="app",
        scopes=["inference"],
        actor=actor,
        created_by_id=creator.pk if creator else None,
    )
    budget = BudgetFactory(team=team, name="daily")
    endpoint.refresh_from_db()
    return World(team, backend, model_version, release, release_b, endpoint, key, secret, budget, None, None)


@pytest.fixture
def world(team: Any, owner: Any, member: Any, viewer: Any, outsider: Any) -> World:
    built = build_world(team, owner)
    built.viewer_membership = viewer.memberships.get(team=team)
    built.outsider_user = outsider
    return built


@pytest.fixture
def other_world(other_team: Any, outsider: Any) -> World:
    built = build_world(other_team, outsider)
    built.viewer_membership = outsider.memberships.get(team=other_team)
    return built


@pytest.fixture
def newcomer(db: None) -> Any:
    """A user in no team yet (to be added as a member)."""
    return UserFactory(username="nina-newcomer")


@pytest.fixture(scope="module")
def engine_process() -> Any:
    """The real embedded engine as a subprocess (serves /info and /v1/models like TGI)."""
    from serving.engine.launcher import spawn_engine

    with spawn_engine("default", extra_args=["--max-concurrent-requests", "4"]) as process:
        yield process
