"""Endpoints: switching traffic, rolling back and setting fallbacks are single audited calls that
bump config_version and publish a cache invalidation after commit (real Redis pub/sub)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings

from controlplane.models import AuditEvent, Endpoint, TrafficSplit
from controlplane.services.events import CHANNEL
from tests.factories import ReleaseFactory


def policy(endpoint: Endpoint) -> list[tuple[int, int]]:
    return sorted(TrafficSplit.objects.filter(endpoint=endpoint).values_list("release_id", "weight"))


@pytest.fixture
def invalidations() -> Iterator[Any]:
    """A real subscriber on the invalidation channel; call it to drain received messages."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)
    pubsub.get_message(timeout=1.0)  # the subscribe confirmation

    def drain(wait: float = 1.0) -> list[dict[str, str]]:
        messages, deadline = [], time.monotonic() + wait
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
            if message:
                messages.append(json.loads(message["data"]))
        return messages

    yield drain
    pubsub.close()
    client.close()


@pytest.mark.django_db
def test_switch_then_roll_back_then_forward(
    owner_client, world, django_capture_on_commit_callbacks, invalidations
):
    r1, r2, endpoint = world.release, world.release_b, world.endpoint
    start = endpoint.config_version
    with django_capture_on_commit_callbacks(execute=True):
        switched = owner_client.post(
            f"/api/endpoints/{endpoint.pk}/traffic/",
            {"traffic": [{"release": r1.pk, "weight": 90}, {"release": r2.pk, "weight": 10}]},
            format="json",
        )
    assert switched.status_code == 200, switched.content
    assert switched.json()["config_version"] == start + 1
    assert switched.json()["previous_policy"] == [{"release": r2.pk, "weight": 100}]
    assert policy(endpoint) == sorted([(r1.pk, 90), (r2.pk, 10)])
    assert {"kind": "endpoint", "key": str(endpoint.pk)} in invalidations()

    with django_capture_on_commit_callbacks(execute=True):
        rolled = owner_client.post(f"/api/endpoints/{endpoint.pk}/rollback/")
    assert rolled.status_code == 200 and rolled.json()["config_version"] == start + 2
    assert policy(endpoint) == [(r2.pk, 100)]
    assert rolled.json()["previous_policy"] == [
        {"release": r1.pk, "weight": 90},
        {"release": r2.pk, "weight": 10},
    ]
    assert {"kind": "endpoint", "key": str(endpoint.pk)} in invalidations()

    forward = owner_client.post(f"/api/endpoints/{endpoint.pk}/rollback/")
    assert (
        policy(endpoint) == sorted([(r1.pk, 90), (r2.pk, 10)])
        and forward.json()["config_version"] == start + 3
    )
    actions = list(AuditEvent.objects.filter(target_id=str(endpoint.pk)).values_list("action", flat=True))
    assert actions[-3:] == ["endpoint.set_traffic", "endpoint.rollback", "endpoint.rollback"]
    event = AuditEvent.objects.filter(action="endpoint.set_traffic").last()
    assert event.diff["after"]["traffic"] == [
        {"release": r1.pk, "weight": 90},
        {"release": r2.pk, "weight": 10},
    ]


@pytest.mark.django_db
def test_setting_the_same_policy_changes_nothing(owner_client, world):
    before = (world.endpoint.config_version, AuditEvent.objects.count())
    response = owner_client.post(
        f"/api/endpoints/{world.endpoint.pk}/traffic/",
        {"traffic": [{"release": world.release_b.pk, "weight": 100}]},
        format="json",
    )
    assert response.status_code == 200
    world.endpoint.refresh_from_db()
    assert (world.endpoint.config_version, AuditEvent.objects.count()) == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("entries", "says"),
    [
        (
            lambda w: [{"release": w.release.pk, "weight": 60}, {"release": w.release_b.pk, "weight": 30}],
            "sum to 90",
        ),
        (
            lambda w: [{"release": w.release.pk, "weight": 60}, {"release": w.release_b.pk, "weight": 50}],
            "sum to 110",
        ),
        (
            lambda w: [{"release": w.release.pk, "weight": 50}, {"release": w.release.pk, "weight": 50}],
            "once",
        ),
        (
            lambda w: [{"release": w.release.pk, "weight": -5}, {"release": w.release_b.pk, "weight": 105}],
            "weight",
        ),
        (lambda w: [{"release": w.release.pk, "weight": 99.5}], "weight"),
        (lambda w: [], "at least one"),
        (lambda w: [{"release": w.release.pk, "wieght": 100}], "unknown field"),
    ],
)
def test_bad_traffic_is_400_with_the_fix_and_changes_nothing(
    owner_client, world, django_capture_on_commit_callbacks, invalidations, entries, says
):
    before = (policy(world.endpoint), world.endpoint.config_version, AuditEvent.objects.count())
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = owner_client.post(
            f"/api/endpoints/{world.endpoint.pk}/traffic/", {"traffic": entries(world)}, format="json"
        )
    assert response.status_code == 400, response.content
    assert "traffic" in response.json() and says in json.dumps(response.json())
    world.endpoint.refresh_from_db()
    assert (policy(world.endpoint), world.endpoint.config_version, AuditEvent.objects.count()) == before
    assert callbacks == [] and invalidations(wait=0.3) == []


@pytest.mark.django_db
def test_a_release_of_another_team_cannot_take_traffic(owner_client, owner, world, other_world):
    invisible = owner_client.post(
        f"/api/endpoints/{world.endpoint.pk}/traffic/",
        {"traffic": [{"release": other_world.release.pk, "weight": 100}]},
        format="json",
    )
    assert invisible.status_code == 400 and "traffic" in invisible.json()
    from tests.factories import MembershipFactory

    MembershipFactory(team=other_world.team, user=owner, role="owner")  # now visible, still foreign
    foreign = owner_client.post(
        f"/api/endpoints/{world.endpoint.pk}/traffic/",
        {"traffic": [{"release": other_world.release.pk, "weight": 100}]},
        format="json",
    )
    assert foreign.status_code == 400 and "another team" in foreign.json()["traffic"][0]


@pytest.mark.django_db
def test_roll_back_with_nothing_to_roll_back_to_is_400(owner_client, world):
    fresh = owner_client.post(
        "/api/endpoints/",
        {"name": "fresh", "traffic": [{"release": world.release.pk, "weight": 100}]},
        format="json",
    )
    assert fresh.status_code == 201 and fresh.json()["config_version"] == 1
    response = owner_client.post(f"/api/endpoints/{fresh.json()['id']}/rollback/")
    assert response.status_code == 400 and "nothing to roll back" in response.json()["previous_policy"][0]


@pytest.mark.django_db
def test_fallback_chain_keeps_its_order_and_bumps_the_version(owner_client, world, other_world):
    r3 = ReleaseFactory(team=world.team, model_version=world.model_version, name="r3")
    start = world.endpoint.config_version
    chain = [r3.pk, world.release.pk]
    response = owner_client.post(
        f"/api/endpoints/{world.endpoint.pk}/fallbacks/", {"releases": chain}, format="json"
    )
    assert response.status_code == 200 and response.json()["fallbacks"] == chain
    assert response.json()["config_version"] == start + 1
    duplicate = owner_client.post(
        f"/api/endpoints/{world.endpoint.pk}/fallbacks/", {"releases": [r3.pk, r3.pk]}, format="json"
    )
    assert duplicate.status_code == 400 and "once" in duplicate.json()["fallbacks"][0]
    foreign = owner_client.post(
        f"/api/endpoints/{world.endpoint.pk}/fallbacks/",
        {"releases": [other_world.release.pk]},
        format="json",
    )
    assert foreign.status_code == 400
    assert owner_client.get(f"/api/endpoints/{world.endpoint.pk}/").json()["fallbacks"] == chain


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "says"), [("chat", "already has"), ("has space", "letters"), ("-x", "letters")]
)
def test_bad_endpoint_names_are_400(owner_client, world, name, says):
    response = owner_client.post("/api/endpoints/", {"name": name}, format="json")
    assert response.status_code == 400 and says in response.json()["name"][0]


@pytest.mark.django_db
def test_endpoint_name_is_fixed_after_creation(owner_client, world):
    response = owner_client.patch(f"/api/endpoints/{world.endpoint.pk}/", {"name": "renamed"}, format="json")
    assert response.status_code == 400 and response.json()["name"] == ["unknown field"]
