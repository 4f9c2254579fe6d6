"""Prompts API: every endpoint for owner, member (developer), viewer and outsider; audit rows for
writes; 400s that say what to fix; versions immutable over the API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from controlplane.models import AuditEvent
from prompts.models import PromptLabel, PromptVersion
from tests.prompts.conftest import PromptWorld

ROLES = ["owner", "member", "viewer", "outsider"]


def _client(request: pytest.FixtureRequest, role: str) -> Any:
    return request.getfixturevalue(f"{role}_client")


def _last_event_id() -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


@dataclass(frozen=True)
class Read:
    name: str
    method: str
    url: Callable[[PromptWorld], str]
    body: Callable[[PromptWorld], dict[str, Any]] | None = None


READS = [
    Read("prompt detail", "get", lambda w: f"/api/prompts/{w.prompt.pk}/"),
    Read(
        "render by label",
        "post",
        lambda w: f"/api/prompts/{w.prompt.pk}/render/",
        lambda w: {"label": "production", "variables": {"customer": "Ada"}},
    ),
    Read("version detail", "get", lambda w: f"/api/prompt-versions/{w.v1.pk}/"),
    Read(
        "version render",
        "post",
        lambda w: f"/api/prompt-versions/{w.v1.pk}/render/",
        lambda w: {"variables": {"customer": "Ada"}},
    ),
    Read("label detail", "get", lambda w: f"/api/prompt-labels/{w.prompt.labels.get().pk}/"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("read", READS, ids=lambda r: r.name)
def test_reads_and_previews_need_any_role_and_are_404_for_outsiders(
    request: pytest.FixtureRequest, prompts: PromptWorld, role: str, read: Read
) -> None:
    before = _last_event_id()
    client = _client(request, role)
    body = read.body(prompts) if read.body else None
    response = getattr(client, read.method)(read.url(prompts), body, format="json")
    assert response.status_code == (404 if role == "outsider" else 200), response.content
    assert _last_event_id() == before  # reads and previews write nothing


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("url", ["/api/prompts/", "/api/prompt-versions/", "/api/prompt-labels/"])
def test_lists_show_only_the_callers_teams(
    request: pytest.FixtureRequest, prompts: PromptWorld, role: str, url: str
) -> None:
    response = _client(request, role).get(url)
    assert response.status_code == 200
    rows = response.json()["results"]
    prompt_ids = {row.get("prompt", row["id"]) for row in rows}
    assert (prompts.prompt.pk in prompt_ids) is (role != "outsider")
    if url != "/api/prompt-labels/":  # the other team's prompt has no label
        assert (prompts.other.pk in prompt_ids) is (role == "outsider")


@dataclass(frozen=True)
class Write:
    name: str
    url: Callable[[PromptWorld], str]
    body: Callable[[PromptWorld], dict[str, Any]]
    ok: int
    action: str
    target: Callable[[PromptWorld, dict[str, Any]], str]
    outsider: int  # 404 when the URL names the object, 400 ("does not exist") when the body does


WRITES = [
    Write(
        "create prompt",
        lambda w: "/api/prompts/",
        lambda w: {"team": w.prompt.team_id, "name": "new-one"},
        201,
        "prompt.create",
        lambda w, r: str(r["id"]),
        400,
    ),
    Write(
        "create version",
        lambda w: "/api/prompt-versions/",
        lambda w: {"prompt": w.prompt.pk, "template": "Bye {{ customer }}", "variables_schema": {}},
        201,
        "prompt_version.create",
        lambda w, r: str(r["id"]),
        400,
    ),
    Write(
        "create label",
        lambda w: "/api/prompt-labels/",
        lambda w: {"prompt": w.prompt.pk, "name": "staging", "version": 2},
        201,
        "prompt_label.move",
        lambda w, r: str(r["id"]),
        400,
    ),
    Write(
        "move label",
        lambda w: f"/api/prompt-labels/{w.prompt.labels.get().pk}/move/",
        lambda w: {"version": 2},
        200,
        "prompt_label.move",
        lambda w, r: str(r["id"]),
        404,
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("write", WRITES, ids=lambda w: w.name)
def test_writes_need_a_write_role_and_leave_one_audit_row(
    request: pytest.FixtureRequest, prompts: PromptWorld, role: str, write: Write
) -> None:
    before = _last_event_id()
    user = request.getfixturevalue(role)
    response = _client(request, role).post(write.url(prompts), write.body(prompts), format="json")
    if role in ("owner", "member"):
        assert response.status_code == write.ok, response.content
        events = list(AuditEvent.objects.filter(id__gt=before))
        assert [e.action for e in events] == [write.action]
        assert (events[0].actor_type, events[0].actor_id) == ("user", str(user.pk))
        assert events[0].team_id == prompts.prompt.team_id
        assert events[0].target_id == write.target(prompts, response.json())
    else:
        assert response.status_code == (403 if role == "viewer" else write.outsider), response.content
        assert _last_event_id() == before
    if role == "outsider" and write.outsider == 400:
        assert "does not exist" in str(response.json())


@pytest.mark.django_db
def test_management_key_with_write_scope_acts_as_a_developer(
    management_key_client: Any, management_key: Any, prompts: PromptWorld
) -> None:
    response = management_key_client.post(
        "/api/prompt-versions/", {"prompt": prompts.prompt.pk, "template": "k"}, format="json"
    )
    assert response.status_code == 201
    event = AuditEvent.objects.get(action="prompt_version.create", target_id=str(response.json()["id"]))
    assert (event.actor_type, event.actor_id) == ("api_key", str(management_key[0].pk))
    assert response.json()["created_by"] is None


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_versions_cannot_be_changed_or_deleted_over_the_api(
    owner_client: Any, prompts: PromptWorld, method: str
) -> None:
    url = f"/api/prompt-versions/{prompts.v1.pk}/"
    response = getattr(owner_client, method)(url, {"template": "changed"}, format="json")
    assert response.status_code == 405
    assert PromptVersion.objects.get(pk=prompts.v1.pk).template == "Hello {{ customer }}"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"template": "Hi {{ customer"}, "template", "does not parse: line 1:"),
        ({"template": "a\nb\n{% endif %}"}, "template", "does not parse: line 3:"),
        (
            {"template": "{{ a }}", "variables_schema": {"type": "banana"}},
            "variables_schema",
            "not a valid JSON Schema",
        ),
        (
            {"template": "{{ a }}", "variables_schema": "not a schema"},
            "variables_schema",
            "must be a JSON object",
        ),
        ({"template": "x", "colour": "red"}, "colour", "unknown field"),
        ({}, "template", "required"),
    ],
)
def test_bad_versions_are_400_with_a_message_and_no_row(
    owner_client: Any, prompts: PromptWorld, body: dict[str, Any], field: str, message: str
) -> None:
    before = _last_event_id()
    response = owner_client.post(
        "/api/prompt-versions/", {"prompt": prompts.prompt.pk, **body}, format="json"
    )
    assert response.status_code == 400
    assert message in str(response.json()[field])
    assert prompts.prompt.versions.count() == 2 and _last_event_id() == before


@pytest.mark.django_db
def test_render_problems_are_400_listing_each_variable(owner_client: Any, prompts: PromptWorld) -> None:
    response = owner_client.post(
        f"/api/prompt-versions/{prompts.v2.pk}/render/", {"variables": {"n": 1.5, "foo": "x"}}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["problems"] == [
        "missing variable 'customer'",
        "unexpected variable 'foo'",
        "variable 'n' must be integer",
    ]
    sandbox = owner_client.post(
        "/api/prompt-versions/",
        {"prompt": prompts.prompt.pk, "template": "{{ ''.__class__.__mro__ }}"},
        format="json",
    )
    assert sandbox.status_code == 201
    blocked = owner_client.post(f"/api/prompt-versions/{sandbox.json()['id']}/render/", {}, format="json")
    assert blocked.status_code == 400 and "sandbox" in blocked.json()["problems"][0]


@pytest.mark.django_db
def test_render_by_label_serves_the_labelled_version(owner_client: Any, prompts: PromptWorld) -> None:
    url = f"/api/prompts/{prompts.prompt.pk}/render/"
    response = owner_client.post(
        url, {"label": "production", "variables": {"customer": "Ada"}}, format="json"
    )
    assert response.json() == {
        "prompt": "support-reply",
        "version": 1,
        "system": "You are terse.",
        "text": "Hello Ada",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello Ada"},
        ],
    }
    missing = owner_client.post(url, {"label": "canary", "variables": {}}, format="json")
    assert missing.status_code == 400 and "has no label 'canary'" in missing.json()["label"][0]
    both = owner_client.post(url, {"label": "production", "version": 1}, format="json")
    assert both.status_code == 400


@pytest.mark.django_db
def test_label_move_errors_are_400s(owner_client: Any, prompts: PromptWorld) -> None:
    label = prompts.prompt.labels.get()
    absent = owner_client.post(f"/api/prompt-labels/{label.pk}/move/", {"version": 9}, format="json")
    assert absent.status_code == 400 and "has no version 9" in absent.json()["version"][0]
    bad_name = owner_client.post(
        "/api/prompt-labels/", {"prompt": prompts.prompt.pk, "name": "Prod!", "version": 1}, format="json"
    )
    assert bad_name.status_code == 400 and "lower-case" in bad_name.json()["name"][0]
    moved_again = owner_client.post(
        "/api/prompt-labels/",
        {"prompt": prompts.prompt.pk, "name": "production", "version": 2},
        format="json",
    )
    assert moved_again.status_code == 200 and moved_again.json()["version"] == 2
    assert PromptLabel.objects.get(pk=label.pk).version_id == prompts.v2.pk


@pytest.mark.django_db
def test_duplicate_prompt_name_is_400(owner_client: Any, prompts: PromptWorld) -> None:
    response = owner_client.post(
        "/api/prompts/", {"team": prompts.prompt.team_id, "name": "support-reply"}, format="json"
    )
    assert response.status_code == 400 and "already has a prompt named" in response.json()["name"][0]


@pytest.mark.django_db
def test_prompt_detail_shows_labels_and_latest_version(owner_client: Any, prompts: PromptWorld) -> None:
    body = owner_client.get(f"/api/prompts/{prompts.prompt.pk}/").json()
    assert body["labels"] == {"production": 1} and body["latest_version"] == 2
