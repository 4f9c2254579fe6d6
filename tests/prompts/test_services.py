"""Prompt services: every write leaves one audit row; bad input is refused with a field message."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from controlplane.models import AuditEvent
from controlplane.services.audit import Actor
from prompts.models import Prompt, PromptLabel, PromptVersion
from prompts.rendering import PromptRenderError
from prompts.selectors import prompt_version_by_label, prompt_version_by_number
from prompts.services import prompt_create, prompt_label_move, prompt_render, prompt_version_create
from tests.prompts.conftest import PromptWorld

ACTOR = Actor(type="user", id="41", label="pat", request_id="req-prompt-001", ip="192.0.2.1")


def _last(action: str) -> AuditEvent:
    return AuditEvent.objects.filter(action=action).order_by("-id").first()  # type: ignore[return-value]


@pytest.mark.django_db
def test_prompt_create_is_audited(team: Any) -> None:
    prompt = prompt_create(team=team, name="faq", description="answers", actor=ACTOR)
    event = _last("prompt.create")
    assert (event.target_type, event.target_id, event.team_id) == ("prompts.prompt", str(prompt.pk), team.pk)
    assert event.diff["after"] == {"name": "faq", "description": "answers"}
    assert (event.actor_id, event.request_id, event.ip) == ("41", "req-prompt-001", "192.0.2.1")


@pytest.mark.django_db
def test_version_create_numbers_versions_and_is_audited(prompts: PromptWorld) -> None:
    v3 = prompt_version_create(
        prompt=prompts.prompt, template="Yo {{ customer }}", actor=ACTOR, commit_message="c"
    )
    assert v3.version == 3
    event = _last("prompt_version.create")
    assert event.target_id == str(v3.pk) and event.diff["after"]["template"] == "Yo {{ customer }}"
    assert event.diff["after"]["version"] == 3
    assert prompt_version_create(prompt=prompts.other, template="x", actor=ACTOR).version == 2  # per prompt


@pytest.mark.django_db
def test_label_move_is_audited_with_before_and_after_and_creation(prompts: PromptWorld) -> None:
    prompt_label_move(prompt=prompts.prompt, label="production", version=prompts.v2, actor=ACTOR)
    moved = _last("prompt_label.move")
    assert moved.diff == {"before": {"version": 1}, "after": {"version": 2}}
    prompt_label_move(prompt=prompts.prompt, label="staging", version=prompts.v2, actor=ACTOR)
    created = _last("prompt_label.move")
    assert created.diff == {"before": None, "after": {"name": "staging", "version": 2}}
    assert prompt_version_by_label(prompts.prompt.team, "support-reply", "production") == prompts.v2


@pytest.mark.django_db
def test_moving_a_label_to_where_it_already_points_writes_nothing(prompts: PromptWorld) -> None:
    count = AuditEvent.objects.count()
    prompt_label_move(prompt=prompts.prompt, label="production", version=prompts.v1, actor=ACTOR)
    assert AuditEvent.objects.count() == count


@pytest.mark.django_db
def test_label_cannot_point_at_another_prompts_version(prompts: PromptWorld) -> None:
    foreign = PromptVersion.objects.get(prompt=prompts.other)
    with pytest.raises(ValidationError) as caught:
        prompt_label_move(prompt=prompts.prompt, label="production", version=foreign, actor=ACTOR)
    assert "belongs to another prompt" in str(caught.value.message_dict["version"])
    assert prompt_version_by_label(prompts.prompt.team, "support-reply", "production") == prompts.v1


@pytest.mark.django_db
@pytest.mark.parametrize("label", ["Production", "", "a b", "-x", "x" * 51])
def test_bad_label_names_are_refused(prompts: PromptWorld, label: str) -> None:
    with pytest.raises(ValidationError, match="lower-case letters"):
        prompt_label_move(prompt=prompts.prompt, label=label, version=prompts.v2, actor=ACTOR)
    assert not PromptLabel.objects.filter(name=label).exists()


@pytest.mark.django_db
def test_duplicate_and_malformed_prompt_names_are_field_errors_and_write_nothing(
    prompts: PromptWorld,
) -> None:
    count = AuditEvent.objects.count()
    with pytest.raises(ValidationError) as caught:
        prompt_create(team=prompts.prompt.team, name="support-reply", actor=ACTOR)
    assert "already has a prompt named 'support-reply'" in caught.value.message_dict["name"][0]
    with pytest.raises(ValidationError, match="letters, digits"):
        prompt_create(team=prompts.prompt.team, name="no spaces please", actor=ACTOR)
    assert AuditEvent.objects.count() == count and Prompt.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"template": "Hi {{ name"}, "template", "does not parse: line 1:"),
        ({"template": "a\nb\n{% if x %}"}, "template", "does not parse: line 3:"),
        ({"template": "ok", "system_message": "{% endfor %}"}, "system_message", "does not parse: line 1:"),
        ({"template": "   "}, "template", "must not be empty"),
        (
            {"template": "{{ a }}", "variables_schema": {"type": "nope"}},
            "variables_schema",
            "not a valid JSON Schema",
        ),
        ({"template": "{{ a }}", "variables_schema": ["a"]}, "variables_schema", "must be a JSON object"),
        (
            {"template": "{{ a }} {{ b }}", "variables_schema": {"properties": {"a": {}}}},
            "variables_schema",
            "the template uses 'b', which properties does not declare",
        ),
    ],
)
def test_bad_versions_are_refused_with_the_field_and_line(
    prompts: PromptWorld, kwargs: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        prompt_version_create(prompt=prompts.prompt, actor=ACTOR, **kwargs)
    assert message in caught.value.message_dict[field][0]
    assert prompts.prompt.versions.count() == 2


@pytest.mark.django_db
def test_render_uses_the_versions_schema_and_names_problems(prompts: PromptWorld) -> None:
    rendered = prompt_render(prompts.v1, {"customer": "Ada"})
    assert (rendered.system, rendered.text, rendered.version) == ("You are terse.", "Hello Ada", 1)
    with pytest.raises(PromptRenderError) as caught:
        prompt_render(prompts.v2, {"n": "two", "extra": True})
    assert caught.value.problems == [
        "missing variable 'customer'",
        "unexpected variable 'extra'",
        "variable 'n' must be integer",
    ]


@pytest.mark.django_db
def test_selectors_find_versions_by_label_and_number_within_the_team(prompts: PromptWorld) -> None:
    team = prompts.prompt.team
    assert prompt_version_by_number(team.pk, "support-reply", 2) == prompts.v2
    with pytest.raises(PromptVersion.DoesNotExist):
        prompt_version_by_label(team, "support-reply", "staging")
    with pytest.raises(PromptVersion.DoesNotExist):
        prompt_version_by_label(prompts.other.team, "support-reply", "production")  # other team's prompt


@pytest.mark.django_db
def test_label_move_publishes_a_cache_invalidation_after_commit(
    prompts: PromptWorld, django_capture_on_commit_callbacks: Any
) -> None:
    import json as jsonlib

    import redis
    from django.conf import settings

    from controlplane.services.events import CHANNEL

    client = redis.Redis.from_url(settings.REDIS_URL)
    subscriber = client.pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(CHANNEL)
    try:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            prompt_label_move(prompt=prompts.prompt, label="production", version=prompts.v2, actor=ACTOR)
            assert subscriber.get_message(timeout=0.2) is None  # nothing before the commit
        assert len(callbacks) == 1
        message = subscriber.get_message(timeout=5)
        assert message is not None
        key = f"{prompts.prompt.team_id}/support-reply@production"
        assert jsonlib.loads(message["data"]) == {"kind": "prompt", "key": key}
    finally:
        subscriber.close()
        client.close()
