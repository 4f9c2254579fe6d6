"""Prompts admin: writes go through the services (validated, audited), versions are read-only, labels move."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.models import AuditEvent
from prompts.models import Prompt, PromptLabel, PromptVersion
from tests.prompts.conftest import PromptWorld


@pytest.mark.django_db
def test_admin_creates_a_version_through_the_service(
    owner_client: Any, owner: Any, prompts: PromptWorld
) -> None:
    response = owner_client.post(
        "/admin/prompts/promptversion/add/",
        {
            "prompt": prompts.prompt.pk,
            "template": "Howdy {{ customer }}",
            "system_message": "",
            "variables_schema": json.dumps(
                {"type": "object", "properties": {"customer": {"type": "string"}}}
            ),
            "commit_message": "friendlier",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    version = PromptVersion.objects.get(prompt=prompts.prompt, version=3)
    assert version.template == "Howdy {{ customer }}" and version.created_by == owner
    event = AuditEvent.objects.get(action="prompt_version.create", target_id=str(version.pk))
    assert event.actor_id == str(owner.pk)


@pytest.mark.django_db
def test_admin_version_form_shows_template_and_schema_errors(owner_client: Any, prompts: PromptWorld) -> None:
    response = owner_client.post(
        "/admin/prompts/promptversion/add/",
        {
            "prompt": prompts.prompt.pk,
            "template": "line\n{{ broken",
            "system_message": "",
            "variables_schema": json.dumps({"type": 12}),
            "commit_message": "",
        },
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "does not parse: line 2" in page and "not a valid JSON Schema" in page
    assert prompts.prompt.versions.count() == 2


@pytest.mark.django_db
def test_admin_versions_are_read_only_once_created(owner_client: Any, prompts: PromptWorld) -> None:
    url = f"/admin/prompts/promptversion/{prompts.v1.pk}/change/"
    page = owner_client.get(url)
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert owner_client.post(url, {"template": "changed"}).status_code == 403
    assert (
        owner_client.post(
            f"/admin/prompts/promptversion/{prompts.v1.pk}/delete/", {"post": "yes"}
        ).status_code
        == 403
    )
    assert PromptVersion.objects.get(pk=prompts.v1.pk).template == "Hello {{ customer }}"


@pytest.mark.django_db
def test_admin_action_moves_the_production_label_with_an_audit_row(
    owner_client: Any, prompts: PromptWorld
) -> None:
    response = owner_client.post(
        "/admin/prompts/promptversion/",
        {
            "action": "move_production_label",
            "_selected_action": [prompts.v2.pk],
        },
    )
    assert response.status_code == 302
    assert PromptLabel.objects.get(prompt=prompts.prompt, name="production").version_id == prompts.v2.pk
    event = AuditEvent.objects.filter(action="prompt_label.move").latest("id")
    assert event.diff == {"before": {"version": 1}, "after": {"version": 2}}


@pytest.mark.django_db
def test_admin_label_form_moves_the_label_via_the_service(owner_client: Any, prompts: PromptWorld) -> None:
    label = PromptLabel.objects.get(prompt=prompts.prompt, name="production")
    response = owner_client.post(f"/admin/prompts/promptlabel/{label.pk}/change/", {"version": prompts.v2.pk})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert PromptLabel.objects.get(pk=label.pk).version_id == prompts.v2.pk
    assert AuditEvent.objects.filter(action="prompt_label.move", target_id=str(label.pk)).count() == 2


@pytest.mark.django_db
def test_admin_creates_prompts_via_the_service_and_refuses_bad_names(
    owner_client: Any, team: Any, prompts: PromptWorld
) -> None:
    ok = owner_client.post(
        "/admin/prompts/prompt/add/", {"team": team.pk, "name": "triage", "description": ""}
    )
    assert ok.status_code == 302
    prompt = Prompt.objects.get(team=team, name="triage")
    assert AuditEvent.objects.filter(action="prompt.create", target_id=str(prompt.pk)).exists()
    bad = owner_client.post(
        "/admin/prompts/prompt/add/", {"team": team.pk, "name": "no spaces", "description": ""}
    )
    assert bad.status_code == 200 and "letters, digits" in bad.content.decode()


@pytest.mark.django_db
def test_admin_is_team_scoped_and_read_only_for_viewers(
    viewer_client: Any, outsider_client: Any, prompts: PromptWorld
) -> None:
    listing = viewer_client.get("/admin/prompts/prompt/")
    assert listing.status_code == 200
    assert f"/admin/prompts/prompt/{prompts.prompt.pk}/change/".encode() in listing.content
    assert f"/admin/prompts/prompt/{prompts.other.pk}/change/".encode() not in listing.content
    assert viewer_client.get("/admin/prompts/promptversion/add/").status_code == 403
    label = PromptLabel.objects.get(prompt=prompts.prompt, name="production")
    assert (
        viewer_client.post(
            f"/admin/prompts/promptlabel/{label.pk}/change/", {"version": prompts.v2.pk}
        ).status_code
        == 403
    )
    assert outsider_client.get(f"/admin/prompts/promptversion/{prompts.v1.pk}/change/").status_code != 200
    assert PromptLabel.objects.get(pk=label.pk).version_id == prompts.v1.pk
