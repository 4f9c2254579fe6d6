"""Audit API and admin: who reads which team's events, filters, streamed exports, read-only admin."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import AsyncClient
from rest_framework.test import APIClient

from controlplane.models import AuditEvent
from tests.controlplane.audit.helpers import KEY, record


@pytest.fixture
def superuser(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("root", "root@example.test", "not-a-real-password-1")


@pytest.fixture
def superuser_client(superuser: Any) -> APIClient:
    client = APIClient()
    client.force_login(superuser)
    return client


@pytest.fixture
def events(team: Any, other_team: Any) -> dict[str, int]:
    return {
        "ours": record("prompt.create", team_id=team.pk, target_type="prompts.prompt", target_id="1"),
        "ours_key": record("prompt_label.move", team_id=team.pk, actor=KEY),
        "theirs": record("prompt.create", team_id=other_team.pk),
        "global": record("budget.rollover", team_id=None),
    }


def _ids(response: Any) -> set[int]:
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


@pytest.mark.django_db
def test_team_owner_and_admin_see_only_their_teams_events(
    owner_client: APIClient, team_admin_client: APIClient, events: dict[str, int]
) -> None:
    for client in (owner_client, team_admin_client):
        assert _ids(client.get("/api/audit/events/")) == {events["ours"], events["ours_key"]}
        assert client.get(f"/api/audit/events/{events['theirs']}/").status_code == 404
        assert client.get(f"/api/audit/events/{events['ours']}/").json()["action"] == "prompt.create"


@pytest.mark.django_db
def test_outsider_sees_their_own_team_and_nothing_of_ours(
    outsider_client: APIClient, events: dict[str, int]
) -> None:
    assert _ids(outsider_client.get("/api/audit/events/")) == {events["theirs"]}
    assert outsider_client.get(f"/api/audit/events/{events['ours']}/").status_code == 404


@pytest.mark.django_db
def test_superuser_sees_every_event_including_team_less_ones(
    superuser_client: APIClient, events: dict[str, int]
) -> None:
    assert set(events.values()) <= _ids(superuser_client.get("/api/audit/events/"))


@pytest.mark.django_db
def test_developers_viewers_and_api_keys_cannot_read_the_audit_log(
    member_client: APIClient,
    viewer_client: APIClient,
    management_key_client: APIClient,
    events: dict[str, int],
) -> None:
    for client in (member_client, viewer_client, management_key_client):
        for url in ("/api/audit/events/", "/api/audit/export.jsonl", "/api/audit/export.csv"):
            response = client.get(url)
            assert response.status_code == 403, url
            assert "team owners and admins" in response.json()["detail"]
    assert APIClient().get("/api/audit/events/").status_code in (401, 403)
    assert not AuditEvent.objects.filter(action="audit.export").exists()


@pytest.mark.django_db
def test_api_filters_and_reports_bad_filters(
    owner_client: APIClient, other_team: Any, events: dict[str, int]
) -> None:
    assert _ids(owner_client.get("/api/audit/events/", {"actor": "api_key:12"})) == {events["ours_key"]}
    assert _ids(owner_client.get("/api/audit/events/", {"target": "prompts.prompt:1"})) == {events["ours"]}
    bad = owner_client.get("/api/audit/events/", {"until": "soon"})
    assert bad.status_code == 400 and "is not a time; use ISO 8601" in bad.json()["until"][0]
    assert owner_client.get("/api/audit/events/", {"colour": "red"}).status_code == 400
    assert owner_client.get("/api/audit/events/", {"team": other_team.pk}).status_code == 404


@pytest.mark.django_db
def test_event_list_pages_with_a_cursor_newest_first(owner_client: APIClient, team: Any) -> None:
    ids = [record(f"thing.create{i}", team_id=team.pk) for i in range(5)]
    page = owner_client.get("/api/audit/events/", {"limit": 2}).json()
    assert [r["id"] for r in page["results"]] == ids[::-1][:2]
    second = owner_client.get(page["next"]).json()
    assert [r["id"] for r in second["results"]] == ids[::-1][2:4]


@pytest.mark.django_db
def test_api_jsonl_export_streams_the_teams_events_and_is_audited(
    owner_client: APIClient, owner: Any, team: Any, events: dict[str, int]
) -> None:
    response: Any = owner_client.get("/api/audit/export.jsonl", headers={"X-Request-ID": "req-export-123"})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "application/x-ndjson"
    assert "attachment" in response["Content-Disposition"]
    lines = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    exported = {line["metadata"]["sequence"] for line in lines}
    audit_export = AuditEvent.objects.get(action="audit.export")
    assert exported == {events["ours"], events["ours_key"], audit_export.pk}
    assert audit_export.team_id == team.pk and audit_export.actor_id == str(owner.pk)
    assert audit_export.request_id == "req-export-123"
    assert audit_export.diff["after"] == {"format": "jsonl", "filters": {}}


@pytest.mark.django_db
def test_api_csv_export_honours_filters(owner_client: APIClient, events: dict[str, int]) -> None:
    response: Any = owner_client.get(
        "/api/audit/export.csv", {"action": "prompt_label.move"}, HTTP_ACCEPT="text/csv"
    )
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert lines[0].startswith("event_id,time,activity_id") and len(lines) == 2
    assert lines[1].startswith(f"{events['ours_key']},")


@pytest.mark.django_db(transaction=True)
async def test_export_under_asgi_streams_through_an_async_iterator(
    superuser: Any, events: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The request runs in its own sync thread; without this its connection outlives the test.
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)
    client = AsyncClient()
    try:
        await client.aforce_login(superuser)
        response: Any = await client.get("/api/audit/export.jsonl")
        assert response.status_code == 200 and response.is_async
        body = b"".join([chunk async for chunk in response.streaming_content])
    finally:
        await sync_to_async(connections.close_all)()  # login's session write ran in a shared sync thread
    operations = [json.loads(line)["api"]["operation"] for line in body.decode().splitlines()]
    assert operations.count("prompt.create") == 2 and operations[-1] == "audit.export"


# --- admin -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_audit_views_are_read_only_even_for_superusers(superuser: Any, events: dict[str, int]) -> None:
    client = APIClient()
    client.force_login(superuser)
    listing = client.get("/admin/controlplane/auditevent/")
    assert listing.status_code == 200 and b"prompt.create" in listing.content
    assert client.get("/admin/controlplane/auditevent/add/").status_code == 403
    detail = client.get(f"/admin/controlplane/auditevent/{events['ours']}/change/")
    assert detail.status_code == 200 and b'name="_save"' not in detail.content
    assert (
        client.post(f"/admin/controlplane/auditevent/{events['ours']}/change/", {"action": "x"}).status_code
        == 403
    )
    assert client.get(f"/admin/controlplane/auditevent/{events['ours']}/delete/").status_code == 403
    assert client.get("/admin/controlplane/auditdigest/").status_code == 200
    assert client.get("/admin/controlplane/auditdigest/add/").status_code == 403


@pytest.mark.django_db
def test_admin_search_by_request_id_and_filter_by_actor_type(superuser: Any, events: dict[str, int]) -> None:
    client = APIClient()
    client.force_login(superuser)
    found = client.get("/admin/controlplane/auditevent/", {"q": "req-key-00002"})
    assert f"/admin/controlplane/auditevent/{events['ours_key']}/change/".encode() in found.content
    assert f"/admin/controlplane/auditevent/{events['ours']}/change/".encode() not in found.content
    by_type = client.get("/admin/controlplane/auditevent/", {"actor_type": "api_key"})
    assert f"/admin/controlplane/auditevent/{events['ours_key']}/change/".encode() in by_type.content
    assert f"/admin/controlplane/auditevent/{events['theirs']}/change/".encode() not in by_type.content


@pytest.mark.django_db
def test_admin_is_team_scoped_for_team_owners_and_closed_to_developers(
    owner_client: APIClient, member_client: APIClient, events: dict[str, int]
) -> None:
    listing = owner_client.get("/admin/controlplane/auditevent/")
    assert listing.status_code == 200
    assert f"/admin/controlplane/auditevent/{events['ours']}/change/".encode() in listing.content
    assert f"/admin/controlplane/auditevent/{events['theirs']}/change/".encode() not in listing.content
    assert owner_client.get(f"/admin/controlplane/auditevent/{events['theirs']}/change/").status_code != 200
    assert owner_client.get("/admin/controlplane/auditdigest/").status_code == 403
    assert member_client.get("/admin/controlplane/auditevent/").status_code == 403
