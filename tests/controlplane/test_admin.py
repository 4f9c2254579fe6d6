"""The admin console: every page renders, team scoping for staff members, writes through the
services (so they are audited), actions, and no secret ever rendered."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from controlplane.crypto import api_key_digest, decrypt_credential
from controlplane.models import ApiKey, AuditEvent, Backend, Endpoint, TrafficSplit

MODELS = ["team", "membership", "apikey", "backend", "modelversion", "release", "endpoint", "budget"]


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def changelist(model: str) -> str:
    return f"/admin/controlplane/{model}/"


@pytest.mark.django_db
@pytest.mark.parametrize("model", MODELS)
def test_changelist_add_and_change_pages_render_for_an_owner(owner, world, model):
    client = login(owner)
    page = client.get(changelist(model))
    assert page.status_code == 200
    assert client.get(f"{changelist(model)}add/").status_code == 200
    obj = {
        "team": world.team,
        "membership": world.viewer_membership,
        "apikey": world.key,
        "backend": world.backend,
        "modelversion": world.model_version,
        "release": world.release,
        "endpoint": world.endpoint,
        "budget": world.budget,
    }[model]
    assert client.get(f"{changelist(model)}{obj.pk}/change/").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("model", MODELS)
def test_staff_members_see_only_their_teams_objects(owner, world, other_world, model):
    client = login(owner)
    other = {
        "team": other_world.team,
        "membership": other_world.viewer_membership,
        "apikey": other_world.key,
        "backend": other_world.backend,
        "modelversion": other_world.model_version,
        "release": other_world.release,
        "endpoint": other_world.endpoint,
        "budget": other_world.budget,
    }[model]
    page = client.get(changelist(model))
    assert f"/{other.pk}/change/" not in page.content.decode()
    response = client.get(f"{changelist(model)}{other.pk}/change/")
    assert response.status_code == 302  # "does not exist" redirect, not the page


@pytest.mark.django_db
def test_viewer_reads_but_cannot_add_or_change(viewer, world):
    client = login(viewer)
    assert client.get(changelist("endpoint")).status_code == 200
    assert client.get(f"{changelist('endpoint')}add/").status_code == 403
    response = client.post(f"{changelist('endpoint')}{world.endpoint.pk}/change/", {"description": "x"})
    assert response.status_code == 403


@pytest.mark.django_db
def test_adding_a_key_shows_the_secret_once_and_stores_only_the_digest(owner, world):
    client = login(owner)
    response = client.post(
        f"{changelist('apikey')}add/",
        {
            "team": world.team.pk,
            "name": "console-key",
            "scopes": ["inference", "management:read"],
            "expires_at_0": "",
            "expires_at_1": "",
            "rpm_limit": "30",
            "tpm_limit": "",
            "concurrency_limit": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    first = client.get(response["Location"]).content.decode()  # the page the message is shown on
    secret = first.split("shown this once: ", 1)[1].split("<", 1)[0].strip()
    key = ApiKey.objects.get(name="console-key")
    assert key.digest == api_key_digest(secret) and key.rpm_limit == 30 and key.created_by_id == owner.pk
    for later in (f"{changelist('apikey')}{key.pk}/change/", changelist("apikey")):
        page = client.get(later).content.decode()
        assert secret not in page and key.digest not in page
    assert AuditEvent.objects.get(action="api_key.create", target_id=str(key.pk)).actor_id == str(owner.pk)


@pytest.mark.django_db
def test_backend_credentials_are_a_write_only_field_in_the_console(owner, world):
    client = login(owner)
    response = client.post(
        f"{changelist('backend')}add/",
        {
            "team": world.team.pk,
            "name": "hosted",
            "kind": "openai",
            "replica_urls": "https://api.example.test/v1",
            "credentials": "sk-console-secret-123",
            "max_concurrency": "8",
            "health_check_interval_s": "10",
            "circuit_failure_threshold": "5",
            "circuit_cooldown_s": "30",
            "connect_timeout_s": "3",
            "first_token_timeout_s": "30",
            "total_timeout_s": "300",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    backend = Backend.objects.get(name="hosted")
    assert decrypt_credential(backend.credentials_encrypted) == "sk-console-secret-123"
    page = client.get(f"{changelist('backend')}{backend.pk}/change/").content.decode()
    assert "sk-console-secret-123" not in page and backend.credentials_encrypted not in page
    assert "sk-console-secret-123" not in str(AuditEvent.objects.get(action="backend.create").diff)


@pytest.mark.django_db
def test_revoke_action_goes_through_the_service(owner, world):
    client = login(owner)
    client.post(changelist("apikey"), {"action": "revoke_keys", "_selected_action": [world.key.pk]})
    world.key.refresh_from_db()
    assert world.key.revoked_at is not None
    assert AuditEvent.objects.get(action="api_key.revoke").actor_id == str(owner.pk)


@pytest.mark.django_db
def test_switch_in_the_change_form_and_roll_back_action(owner, world):
    client = login(owner)
    url = f"{changelist('endpoint')}{world.endpoint.pk}/change/"
    form = {"description": "", "traffic_policy": "r1 = 70\nr2 = 30", "fallback_chain": ""}
    assert client.post(url, form).status_code == 302
    assert sorted(
        TrafficSplit.objects.filter(endpoint=world.endpoint).values_list("release__name", "weight")
    ) == [
        ("r1", 70),
        ("r2", 30),
    ]
    client.post(changelist("endpoint"), {"action": "roll_back", "_selected_action": [world.endpoint.pk]})
    assert list(
        TrafficSplit.objects.filter(endpoint=world.endpoint).values_list("release__name", "weight")
    ) == [
        ("r2", 100),
    ]
    actions = list(
        AuditEvent.objects.filter(target_id=str(world.endpoint.pk)).values_list("action", flat=True)
    )
    assert actions[-2:] == ["endpoint.set_traffic", "endpoint.rollback"]


@pytest.mark.django_db
def test_bad_weights_in_the_console_are_a_form_error_and_change_nothing(owner, world):
    client = login(owner)
    version = world.endpoint.config_version
    response = client.post(
        f"{changelist('endpoint')}{world.endpoint.pk}/change/",
        {"description": "", "traffic_policy": "r1 = 60\nr2 = 30", "fallback_chain": ""},
    )
    assert response.status_code == 200 and "sum to 100" in response.content.decode()
    assert Endpoint.objects.get(pk=world.endpoint.pk).config_version == version


@pytest.mark.django_db
def test_test_connection_action_records_the_result(owner, world):
    client = login(owner)
    response = client.post(
        changelist("backend"), {"action": "test_connection", "_selected_action": [world.backend.pk]}
    )
    assert any("FAILED" in str(m) for m in get_messages(response.wsgi_request))
    world.backend.refresh_from_db()
    assert world.backend.last_test_result["ok"] is False


@pytest.mark.django_db
def test_deleting_objects_in_use_is_refused_without_a_server_error(owner, world):
    client = login(owner)
    protected = client.post(f"{changelist('backend')}{world.backend.pk}/delete/", {"post": "yes"})
    assert (
        protected.status_code == 200 and "protected" in protected.content.decode()
    )  # Django lists what uses it
    assert Backend.objects.filter(pk=world.backend.pk).exists()
    world.key.endpoints.set([world.endpoint])
    refused = client.post(f"{changelist('endpoint')}{world.endpoint.pk}/delete/", {"post": "yes"})
    assert refused.status_code == 302
    assert any("restricted to this endpoint" in str(m) for m in get_messages(refused.wsgi_request))
    assert Endpoint.objects.filter(pk=world.endpoint.pk).exists()
