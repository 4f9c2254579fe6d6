"""API keys: the secret is shown once and never stored or echoed; rotation, revocation, expiry,
bad input, and the create_api_key command."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.crypto import api_key_digest
from controlplane.models import ApiKey, AuditEvent
from controlplane.services.audit import Actor
from controlplane.services.keys import api_key_create


def bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.mark.django_db
def test_secret_is_shown_once_and_never_stored_or_echoed(owner_client, world):
    created = owner_client.post(
        "/api/api-keys/",
        {"name": "billing", "scopes": ["inference"], "endpoints": [world.endpoint.pk], "rpm_limit": 10},
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    secret = body["secret"]
    key = ApiKey.objects.get(pk=body["id"])
    assert secret.startswith(f"sb-{key.lookup_id}-") and body["prefix"] == f"sb-{key.lookup_id}-…"
    # The row holds the lookup id and the peppered HMAC, never the secret or its random part.
    row = ApiKey.objects.filter(pk=key.pk).values().get()
    assert secret not in json.dumps(row, default=str)
    assert secret.rsplit("-", 1)[1] not in json.dumps(row, default=str)
    assert row["digest"] == api_key_digest(secret) != secret
    later = [
        owner_client.get("/api/api-keys/"),
        owner_client.get(f"/api/api-keys/{key.pk}/"),
        owner_client.patch(f"/api/api-keys/{key.pk}/", {"name": "billing-2"}, format="json"),
        owner_client.post(f"/api/api-keys/{key.pk}/revoke/"),
    ]
    for response in later:
        assert response.status_code == 200
        assert secret not in response.content.decode() and key.digest not in response.content.decode()
        assert "secret" not in response.content.decode()
    audit_text = json.dumps(
        list(AuditEvent.objects.filter(target_id=str(key.pk)).values("diff", "target_label"))
    )
    assert secret not in audit_text and key.digest not in audit_text


@pytest.mark.django_db
def test_rotated_key_stays_valid_for_the_grace_period_and_successor_works(owner_client, management_key):
    key, old_secret = management_key
    response = owner_client.post(f"/api/api-keys/{key.pk}/rotate/", {"grace_seconds": 3600}, format="json")
    assert response.status_code == 201
    new_secret = response.json()["secret"]
    assert new_secret != old_secret and response.json()["scopes"] == key.scopes
    assert bearer(old_secret).get("/api/teams/").status_code == 200  # within grace
    assert bearer(new_secret).get("/api/teams/").status_code == 200
    key.refresh_from_db()
    assert key.rotated_to_id == response.json()["id"]
    assert timedelta(minutes=59) < key.revoked_at - timezone.now() <= timedelta(hours=1)
    again = owner_client.post(f"/api/api-keys/{key.pk}/rotate/", {}, format="json")
    assert again.status_code == 400 and "key" in again.json()


@pytest.mark.django_db
def test_rotation_with_zero_grace_stops_the_old_key_at_once(owner_client, management_key):
    key, old_secret = management_key
    assert (
        owner_client.post(f"/api/api-keys/{key.pk}/rotate/", {"grace_seconds": 0}, format="json").status_code
        == 201
    )
    response = bearer(old_secret).get("/api/teams/")
    assert response.status_code == 401 and "revoked or expired" in response.json()["detail"]


@pytest.mark.django_db
def test_revoked_and_expired_keys_get_401(owner_client, team, management_key):
    key, secret = management_key
    assert bearer(secret).get("/api/teams/").status_code == 200
    owner_client.post(f"/api/api-keys/{key.pk}/revoke/")
    assert bearer(secret).get("/api/teams/").status_code == 401
    expiring, expiring_secret = api_key_create(
        team=team,
        name="short",
        scopes=["management:read"],
        actor=Actor.system("t"),
        expires_at=timezone.now() + timedelta(hours=1),
    )
    ApiKey.objects.filter(pk=expiring.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert bearer(expiring_secret).get("/api/teams/").status_code == 401
    assert bearer(expiring_secret[:-3] + "xyz").get("/api/teams/").status_code == 401


@pytest.mark.django_db
def test_read_only_management_key_reads_but_cannot_write(team, world):
    _, secret = api_key_create(team=team, name="ro", scopes=["management:read"], actor=Actor.system("t"))
    client = bearer(secret)
    assert client.get(f"/api/endpoints/{world.endpoint.pk}/").status_code == 200
    response = client.post("/api/endpoints/", {"name": "new"}, format="json")
    assert response.status_code == 403
    assert client.post(f"/api/endpoints/{world.endpoint.pk}/rollback/").status_code == 403


@pytest.mark.django_db
def test_management_key_writes_in_its_team_only_and_is_the_audited_actor(
    management_key_client, management_key, world, other_world
):
    key, _ = management_key
    created = management_key_client.post("/api/endpoints/", {"name": "from-ci"}, format="json")
    assert created.status_code == 201  # team defaults to the key's only team
    event = AuditEvent.objects.get(action="endpoint.create", target_id=str(created.json()["id"]))
    assert (event.actor_type, event.actor_id) == ("api_key", str(key.pk))
    assert management_key_client.get(f"/api/endpoints/{other_world.endpoint.pk}/").status_code == 404
    assert management_key_client.post("/api/teams/", {"name": "Mine"}, format="json").status_code == 403


@pytest.mark.django_db
def test_inference_only_key_cannot_use_the_management_api(world):
    response = bearer(world.key_secret).get("/api/teams/")
    assert response.status_code == 403 and "management scope" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "field", "says"),
    [
        ({"name": "x", "scopes": ["inference", "admin:all"]}, "scopes", "admin:all"),
        ({"name": "x", "scopes": []}, "scopes", ""),
        ({"name": "app", "scopes": ["inference"]}, "name", "already has a key"),
        (
            {"name": "x", "scopes": ["inference"], "expires_at": "2001-01-01T00:00:00Z"},
            "expires_at",
            "future",
        ),
        ({"name": "x", "scopes": ["inference"], "rpm_limit": 0}, "rpm_limit", ""),
        ({"name": "x", "scopes": ["inference"], "tpm_limit": 10**12}, "tpm_limit", ""),  # past the column
        ({"name": "   ", "scopes": ["inference"]}, "name", ""),
        ({"name": "x", "scopes": ["inference"], "wieght": 1}, "wieght", "unknown field"),
    ],
)
def test_bad_key_input_is_400_with_a_field_error_and_no_row(owner_client, world, payload, field, says):
    count = ApiKey.objects.count()
    response = owner_client.post("/api/api-keys/", payload, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json() and says in json.dumps(response.json())
    assert ApiKey.objects.count() == count


@pytest.mark.django_db
def test_key_restricted_to_another_teams_endpoint_is_400(owner_client, world, other_world):
    response = owner_client.post(
        "/api/api-keys/",
        {"name": "x", "scopes": ["inference"], "endpoints": [other_world.endpoint.pk]},
        format="json",
    )
    assert response.status_code == 400 and "endpoints" in response.json()


@pytest.mark.django_db
def test_developer_manages_own_keys_but_not_others(member_client, world):
    mine = member_client.post(
        "/api/api-keys/", {"name": "dev", "scopes": ["inference"]}, format="json"
    ).json()
    assert member_client.post(f"/api/api-keys/{mine['id']}/revoke/").status_code == 200
    assert member_client.post(f"/api/api-keys/{world.key.pk}/revoke/").status_code == 403


@pytest.mark.django_db
def test_endpoint_restricted_by_a_key_cannot_be_deleted(owner_client, world):
    """Deleting would empty the key's endpoint list, which means "every endpoint"."""
    key = owner_client.post(
        "/api/api-keys/",
        {"name": "scoped", "scopes": ["inference"], "endpoints": [world.endpoint.pk]},
        format="json",
    ).json()
    response = owner_client.delete(f"/api/endpoints/{world.endpoint.pk}/")
    assert response.status_code == 400 and "scoped" in response.json()["endpoint"][0]
    owner_client.post(f"/api/api-keys/{key['id']}/revoke/")
    assert owner_client.delete(f"/api/endpoints/{world.endpoint.pk}/").status_code == 204


# --- manage.py create_api_key ------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_api_key_command_prints_a_working_secret_once(team, world):
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "create_api_key",
        "--team",
        team.slug,
        "--name",
        "ops",
        "--scope",
        "management:read",
        "--scope",
        "inference",
        "--endpoint",
        world.endpoint.name,
        "--expires-in",
        "30d",
        "--rpm",
        "100",
        "--tpm",
        "5000",
        "--concurrency",
        "4",
        stdout=out,
        stderr=err,
    )
    secret = out.getvalue().strip()
    key = ApiKey.objects.get(team=team, name="ops")
    assert secret.startswith(f"sb-{key.lookup_id}-") and key.digest == api_key_digest(secret)
    assert secret not in err.getvalue() and "shown once" in err.getvalue()
    assert key.scopes == ["management:read", "inference"]
    assert list(key.endpoints.values_list("name", flat=True)) == [world.endpoint.name]
    assert (key.rpm_limit, key.tpm_limit, key.concurrency_limit) == (100, 5000, 4)
    assert timedelta(days=29) < key.expires_at - timezone.now() <= timedelta(days=30)
    assert bearer(secret).get("/api/teams/").status_code == 200
    event = AuditEvent.objects.get(action="api_key.create", target_id=str(key.pk))
    assert event.actor_type == "system" and secret not in json.dumps(event.diff)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--team", "nope", "--name", "x"], "no team"),
        (["--team", "acme", "--name", "x", "--scope", "root"], "unknown scope"),
        (["--team", "acme", "--name", "x", "--endpoint", "ghost"], "ghost"),
        (["--team", "acme", "--name", "x", "--expires-in", "soon"], "--expires-in"),
        (["--team", "acme", "--name", "x", "--rpm", "0"], "--rpm"),
        (["--team", "acme", "--name", "x", "--tpm", str(10**12)], "tpm_limit"),
        (["--team", "acme", "--name", "x" * 101], "at most 100"),
    ],
)
def test_create_api_key_command_rejects_bad_arguments_without_a_row(team, args, says):
    with pytest.raises(CommandError, match=says):
        call_command("create_api_key", *args, stdout=io.StringIO(), stderr=io.StringIO())
    assert not ApiKey.objects.filter(name__startswith="x").exists()


@pytest.mark.django_db
def test_using_a_key_records_last_used(owner_client, management_key):
    key, secret = management_key
    assert owner_client.get(f"/api/api-keys/{key.pk}/").json()["last_used_at"] is None
    bearer(secret).get("/api/teams/")
    detail = owner_client.get(f"/api/api-keys/{key.pk}/").json()
    assert detail["last_used_at"] is not None and detail["active"] is True
