"""Backends: write-only encrypted credentials, replica validation, and "test connection" against
the real engine, an unreachable port, and (to inject an auth failure) a fake hosted API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from controlplane.crypto import decrypt_credential
from controlplane.models import AuditEvent, Backend
from tests.controlplane.conftest import UNREACHABLE_URL

CREDENTIAL = "sk-live-0123456789abcdefXYZ"


def create(client, **fields):
    payload = {
        "name": "hosted",
        "kind": "openai",
        "replicas": [{"url": "https://api.example.test/v1"}],
        **fields,
    }
    return client.post("/api/backends/", payload, format="json")


@pytest.mark.django_db
def test_credentials_are_write_only_encrypted_and_never_audited_in_clear(owner_client, world):
    response = create(owner_client, credentials=CREDENTIAL)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["has_credentials"] is True and "credentials" not in body
    backend = Backend.objects.get(pk=body["id"])
    assert CREDENTIAL not in backend.credentials_encrypted
    assert decrypt_credential(backend.credentials_encrypted) == CREDENTIAL
    for read in (owner_client.get("/api/backends/"), owner_client.get(f"/api/backends/{backend.pk}/")):
        assert (
            CREDENTIAL not in read.content.decode()
            and backend.credentials_encrypted not in read.content.decode()
        )
    rotated = owner_client.patch(
        f"/api/backends/{backend.pk}/", {"credentials": "sk-other-987654321"}, format="json"
    )
    assert rotated.status_code == 200 and rotated.json()["has_credentials"] is True
    update_event = AuditEvent.objects.filter(action="backend.update", target_id=str(backend.pk)).get()
    assert update_event.diff["after"]["auth_changed"] is True  # the change is visible, the value is not
    cleared = owner_client.patch(f"/api/backends/{backend.pk}/", {"credentials": ""}, format="json")
    assert cleared.json()["has_credentials"] is False
    audit_text = json.dumps(
        list(AuditEvent.objects.filter(target_id=str(backend.pk)).values_list("diff", flat=True))
    )
    assert CREDENTIAL not in audit_text and "sk-other-987654321" not in audit_text


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "error_field"),
    [
        ({"replicas": [{"url": "ftp://10.0.0.1/"}]}, "replicas"),
        ({"replicas": [{"url": "https://user:pw@api.example.test"}]}, "replicas"),
        ({"replicas": [{"url": "http://a:1"}, {"url": "http://a:1/"}]}, "replicas"),
        ({"kind": "vllm"}, "kind"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"name": "tgi-main"}, "name"),  # the world's backend already has this name
    ],
)
def test_bad_backend_input_is_400_and_writes_nothing(owner_client, world, fields, error_field):
    before = (Backend.objects.count(), AuditEvent.objects.count())
    response = create(owner_client, **fields)
    assert response.status_code == 400 and error_field in response.json(), response.content
    assert (Backend.objects.count(), AuditEvent.objects.count()) == before


@pytest.mark.django_db
def test_backend_in_use_cannot_be_deleted(owner_client, world):
    response = owner_client.delete(f"/api/backends/{world.backend.pk}/")
    assert response.status_code == 400 and world.model_version.name in response.json()["backend"][0]
    assert Backend.objects.filter(pk=world.backend.pk).exists()


@pytest.mark.django_db
def test_replicas_are_replaced_as_a_whole_on_update(owner_client, world):
    replicas = [
        {"url": "http://10.0.0.1:8080", "weight": 3},
        {"url": "http://10.0.0.2:8080", "enabled": False},
    ]
    response = owner_client.patch(f"/api/backends/{world.backend.pk}/", {"replicas": replicas}, format="json")
    assert response.status_code == 200
    assert response.json()["replicas"] == [
        {"url": "http://10.0.0.1:8080", "enabled": True, "weight": 3},
        {"url": "http://10.0.0.2:8080", "enabled": False, "weight": 1},
    ]


# --- test connection -----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["engine", "tgi", "openai"])
def test_test_connection_against_the_real_engine_records_what_it_serves(
    owner_client, owner, world, engine_process, kind
):
    backend = owner_client.post(
        "/api/backends/",
        {"name": f"engine-{kind}", "kind": kind, "replicas": [{"url": engine_process.url}]},
        format="json",
    ).json()
    response = owner_client.post(f"/api/backends/{backend['id']}/test-connection/")
    assert response.status_code == 200, response.content
    result = response.json()
    assert result["ok"] is True and result["replicas"][0]["status"] == 200
    assert result["replicas"][0]["models"] == ["switchboard/demo-random-llama"]  # from /info or /v1/models
    stored = Backend.objects.get(pk=backend["id"])
    assert stored.last_tested_at is not None and stored.last_test_result == result
    event = AuditEvent.objects.get(action="backend.test_connection", target_id=str(backend["id"]))
    assert event.outcome == "success" and event.actor_id == str(owner.pk)


@pytest.mark.django_db
def test_test_connection_to_an_unreachable_port_is_recorded_not_raised(owner_client, world):
    response = owner_client.post(f"/api/backends/{world.backend.pk}/test-connection/")
    assert response.status_code == 200
    result = response.json()
    assert result["ok"] is False
    assert (
        result["replicas"][0]["url"] == UNREACHABLE_URL and "unreachable" in result["replicas"][0]["detail"]
    )
    world.backend.refresh_from_db()
    assert world.backend.last_test_result["ok"] is False and world.backend.last_tested_at is not None
    assert AuditEvent.objects.get(action="backend.test_connection").outcome == "failure"


@pytest.mark.django_db
def test_test_connection_without_replicas_says_to_add_one(owner_client, world):
    backend = owner_client.post("/api/backends/", {"name": "empty", "kind": "tgi"}, format="json").json()
    result = owner_client.post(f"/api/backends/{backend['id']}/test-connection/").json()
    assert result["ok"] is False and "add a replica" in result["detail"]


class _HostedApiRequiringKey(BaseHTTPRequestHandler):
    """Fake hosted API, only to inject an authentication failure: 401 unless the bearer is right."""

    def do_GET(self) -> None:
        authorized = self.headers.get("Authorization") == f"Bearer {CREDENTIAL}"
        body = json.dumps(
            {"object": "list", "data": [{"id": "gpt-test"}]} if authorized else {"error": "bad key"}
        )
        self.send_response(200 if authorized and self.path == "/v1/models" else 401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_hosted_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostedApiRequiringKey)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.mark.django_db
def test_openai_test_connection_sends_the_credential_fake_api_rejects_a_wrong_one(
    owner_client, world, fake_hosted_api
):
    good = create(
        owner_client, name="good", credentials=CREDENTIAL, replicas=[{"url": fake_hosted_api}]
    ).json()
    bad = create(owner_client, name="bad", credentials="sk-wrong", replicas=[{"url": fake_hosted_api}]).json()
    ok = owner_client.post(f"/api/backends/{good['id']}/test-connection/").json()
    assert ok["ok"] is True and ok["replicas"][0]["models"] == ["gpt-test"]
    failed = owner_client.post(f"/api/backends/{bad['id']}/test-connection/").json()
    assert failed["ok"] is False and failed["replicas"][0]["status"] == 401
    assert "sk-wrong" not in json.dumps(failed) and CREDENTIAL not in json.dumps(ok)
