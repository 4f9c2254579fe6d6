"""Who may do what on every management endpoint, generated from one table (NetBox-style).

Roles: owner, member (developer), viewer of `team`, and an outsider (owner of another team).
Outsiders see nothing: 404 on detail, absent from lists, and a create naming the team is a 400
("does not exist"). Viewers read but get 403 on writes. Every allowed write leaves one audit row
naming the caller and the target; every refused one leaves no row and no change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from controlplane.models import AuditEvent
from tests.controlplane.conftest import World
from tests.factories import BackendFactory, BudgetFactory, EndpointFactory, ModelVersionFactory

ROLES = ["owner", "member", "viewer", "outsider"]
WRITE, ADMIN = "write", "admin"


@dataclass(frozen=True)
class Action:
    name: str
    payload: Callable[[World], dict[str, Any]]
    ok: int
    audit: str


@dataclass(frozen=True)
class Resource:
    url: str
    audit_prefix: str
    obj: Callable[[World], Any]
    create: Callable[[World], dict[str, Any]] | None
    create_role: str
    update: dict[str, Any] | None
    change_role: str
    disposable: Callable[[World], Any] | None = None
    actions: tuple[Action, ...] = field(default=())


RESOURCES = [
    Resource("teams", "team", lambda w: w.team, None, ADMIN, {"name": "Acme Renamed"}, ADMIN),
    Resource(
        "memberships",
        "membership",
        lambda w: w.viewer_membership,
        lambda w: {"team": w.team.pk, "username": "nina-newcomer", "role": "viewer"},
        ADMIN,
        {"role": "developer"},
        ADMIN,
        disposable=lambda w: w.viewer_membership,
    ),
    Resource(
        "api-keys",
        "api_key",
        lambda w: w.key,
        lambda w: {"team": w.team.pk, "name": "new-key", "scopes": ["inference"]},
        WRITE,
        # The world's key was created by the owner: a developer manages only keys they created.
        {"rpm_limit": 60},
        ADMIN,
        actions=(
            Action("revoke", lambda w: {}, 200, "api_key.revoke"),
            Action("rotate", lambda w: {"grace_seconds": 60}, 201, "api_key.rotate"),
        ),
    ),
    Resource(
        "backends",
        "backend",
        lambda w: w.backend,
        lambda w: {
            "team": w.team.pk,
            "name": "b2",
            "kind": "tgi",
            "replicas": [{"url": "http://127.0.0.1:9"}],
        },
        WRITE,
        {"max_concurrency": 8},
        WRITE,
        disposable=lambda w: BackendFactory(team=w.team, name="spare"),
        actions=(Action("test-connection", lambda w: {}, 200, "backend.test_connection"),),
    ),
    Resource(
        "model-versions",
        "model_version",
        lambda w: w.model_version,
        lambda w: {
            "team": w.team.pk,
            "name": "m2",
            "backend": w.backend.pk,
            "hf_repo_id": "org/m",
            "hf_revision": "a" * 40,
        },
        WRITE,
        {"context_window": 8192},
        WRITE,
        disposable=lambda w: ModelVersionFactory(team=w.team, backend=w.backend, name="spare"),
    ),
    Resource(
        "releases",
        "release",
        lambda w: w.release,
        lambda w: {"team": w.team.pk, "name": "r3", "model_version": w.model_version.pk},
        WRITE,
        None,
        WRITE,
    ),
    Resource(
        "endpoints",
        "endpoint",
        lambda w: w.endpoint,
        lambda w: {"team": w.team.pk, "name": "e2"},
        WRITE,
        {"description": "support bot"},
        WRITE,
        disposable=lambda w: EndpointFactory(team=w.team, name="spare"),
        actions=(
            Action(
                "traffic",
                lambda w: {"traffic": [{"release": w.release.pk, "weight": 100}]},
                200,
                "endpoint.set_traffic",
            ),
            Action("rollback", lambda w: {}, 200, "endpoint.rollback"),
            Action("fallbacks", lambda w: {"releases": [w.release.pk]}, 200, "endpoint.set_fallbacks"),
        ),
    ),
    Resource(
        "budgets",
        "budget",
        lambda w: w.budget,
        lambda w: {"team": w.team.pk, "name": "b2", "scope": "team", "period": "day", "limit_usd": "5"},
        ADMIN,
        {"limit_usd": "20.5"},
        ADMIN,
        disposable=lambda w: BudgetFactory(team=w.team, name="spare"),
    ),
]
BY_URL = {resource.url: resource for resource in RESOURCES}


def allowed(role: str, needed: str) -> bool:
    return role == "owner" or (role == "member" and needed == WRITE)


def client_and_user(request: pytest.FixtureRequest, role: str) -> tuple[Any, Any]:
    return request.getfixturevalue(f"{role}_client"), request.getfixturevalue(role)


def denied_status(role: str) -> int:
    return 404 if role == "outsider" else 403


def last_event_id() -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def assert_audited(after_id: int, action: str, user: Any, target_id: Any, world: World) -> None:
    events = list(AuditEvent.objects.filter(id__gt=after_id, action=action))
    assert len(events) == 1, f"expected one {action} audit row, got {[e.action for e in events]}"
    event = events[0]
    assert (event.actor_type, event.actor_id) == ("user", str(user.pk))
    assert event.target_id == str(target_id) and event.team_id == world.team.pk
    dumped = json.dumps(event.diff)
    assert world.key_secret not in dumped and world.key.digest not in dumped


def assert_nothing_written(after_id: int) -> None:
    assert not AuditEvent.objects.filter(id__gt=after_id).exists(), "a refused write left an audit row"


@pytest.fixture
def setup(world: World, other_world: World, newcomer: Any) -> World:
    return world


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("url", list(BY_URL))
def test_list_shows_only_the_callers_teams(request, setup: World, other_world: World, url: str, role: str):
    resource = BY_URL[url]
    client, _ = client_and_user(request, role)
    response = client.get(f"/api/{url}/", {"limit": 500})
    assert response.status_code == 200
    ids = {item["id"] for item in response.json()["results"]}
    assert (resource.obj(setup).pk in ids) is (role != "outsider")
    assert (resource.obj(other_world).pk in ids) is (role == "outsider")


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("url", list(BY_URL))
def test_detail_is_404_for_outsiders(request, setup: World, url: str, role: str):
    obj = BY_URL[url].obj(setup)
    client, _ = client_and_user(request, role)
    response = client.get(f"/api/{url}/{obj.pk}/")
    assert response.status_code == (404 if role == "outsider" else 200)
    if role != "outsider":
        assert response.json()["id"] == obj.pk


CREATABLE = [r.url for r in RESOURCES if r.create]


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("url", CREATABLE)
def test_create_needs_the_right_role(request, setup: World, url: str, role: str):
    resource = BY_URL[url]
    assert resource.create is not None
    client, user = client_and_user(request, role)
    before = last_event_id()
    response = client.post(f"/api/{url}/", resource.create(setup), format="json")
    if allowed(role, resource.create_role):
        assert response.status_code == 201, response.content
        action = "membership.add" if url == "memberships" else f"{resource.audit_prefix}.create"
        assert_audited(before, action, user, response.json()["id"], setup)
    else:
        # Outsiders cannot even name the team: it reads as "does not exist", not "forbidden".
        assert response.status_code == (400 if role == "outsider" else 403), response.content
        if role == "outsider":
            assert "team" in response.json()
        assert_nothing_written(before)


UPDATABLE = [r.url for r in RESOURCES if r.update]


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("url", UPDATABLE)
def test_update_needs_the_right_role(request, setup: World, url: str, role: str):
    resource = BY_URL[url]
    obj = resource.obj(setup)
    client, user = client_and_user(request, role)
    before = last_event_id()
    response = client.patch(f"/api/{url}/{obj.pk}/", resource.update, format="json")
    if allowed(role, resource.change_role):
        assert response.status_code == 200, response.content
        field_name, value = next(iter(resource.update.items()))  # type: ignore[union-attr]
        assert str(response.json()[field_name]).rstrip("0") == str(value).rstrip("0")
        action = "membership.change_role" if url == "memberships" else f"{resource.audit_prefix}.update"
        assert_audited(before, action, user, obj.pk, setup)
    else:
        assert response.status_code == denied_status(role), response.content
        assert_nothing_written(before)


DELETABLE = [r.url for r in RESOURCES if r.disposable]


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("url", DELETABLE)
def test_delete_needs_the_right_role(request, setup: World, url: str, role: str):
    resource = BY_URL[url]
    assert resource.disposable is not None
    obj = resource.disposable(setup)
    client, user = client_and_user(request, role)
    before = last_event_id()
    response = client.delete(f"/api/{url}/{obj.pk}/")
    model = type(obj)
    if allowed(role, resource.change_role):
        assert response.status_code == 204, response.content
        assert not model.objects.filter(pk=obj.pk).exists()
        action = "membership.remove" if url == "memberships" else f"{resource.audit_prefix}.delete"
        assert_audited(before, action, user, obj.pk, setup)
    else:
        assert response.status_code == denied_status(role), response.content
        assert model.objects.filter(pk=obj.pk).exists()
        assert_nothing_written(before)


ACTIONS = [(r.url, a.name) for r in RESOURCES for a in r.actions]


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("url", "name"), ACTIONS)
def test_actions_need_the_right_role(request, setup: World, url: str, name: str, role: str):
    resource = BY_URL[url]
    action = next(a for a in resource.actions if a.name == name)
    obj = resource.obj(setup)
    client, user = client_and_user(request, role)
    before = last_event_id()
    response = client.post(f"/api/{url}/{obj.pk}/{name}/", action.payload(setup), format="json")
    if allowed(role, resource.change_role):
        assert response.status_code == action.ok, response.content
        assert_audited(before, action.audit, user, obj.pk, setup)
    else:
        assert response.status_code == denied_status(role), response.content
        assert_nothing_written(before)


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["releases"])
def test_releases_have_no_update_or_delete(owner_client, setup: World, url: str):
    path = f"/api/{url}/{setup.release.pk}/"
    assert owner_client.patch(path, {"notes": "x"}, format="json").status_code == 405
    assert owner_client.put(path, {"notes": "x"}, format="json").status_code == 405
    assert owner_client.delete(path).status_code == 405


@pytest.mark.django_db
def test_anonymous_gets_401_everywhere(setup: World):
    from rest_framework.test import APIClient

    client = APIClient()
    for url in BY_URL:
        assert client.get(f"/api/{url}/").status_code == 401
