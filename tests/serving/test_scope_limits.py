"""Team, endpoint and backend rate limits: set through the audited service, enforced by the gateway."""

from __future__ import annotations

import time

import openai
import pytest
from django.core.exceptions import ValidationError

from controlplane.models import AuditEvent
from serving.services.limits import scope_limit_set
from tests.serving.conftest import actor, deploy

pytestmark = pytest.mark.django_db(transaction=True)


def test_setting_limits_is_audited_and_replaces_the_scope_row(engine) -> None:
    d = deploy([engine.url])
    first = scope_limit_set(team=d.team, actor=actor(), endpoint=d.endpoint, rpm_limit=5)
    second = scope_limit_set(team=d.team, actor=actor(), endpoint=d.endpoint, rpm_limit=7, tpm_limit=900)
    assert first.pk == second.pk and (second.rpm_limit, second.tpm_limit) == (7, 900)
    events = AuditEvent.objects.filter(action="scope_limit.set", target_id=str(second.pk)).order_by("id")
    assert [e.diff["after"].get("rpm_limit") for e in events] == [5, 7]


def test_limits_on_another_teams_endpoint_or_bad_values_are_refused(engine) -> None:
    mine, theirs = deploy([engine.url]), deploy([engine.url])
    with pytest.raises(ValidationError) as info:
        scope_limit_set(team=mine.team, actor=actor(), endpoint=theirs.endpoint, rpm_limit=5)
    assert "another team" in str(info.value)
    with pytest.raises(ValidationError):
        scope_limit_set(team=mine.team, actor=actor(), rpm_limit=0)


def test_endpoint_limit_set_through_the_service_is_enforced_by_a_running_gateway(engine, web) -> None:
    d = deploy([engine.url])
    client = openai.OpenAI(base_url=f"{web.url}/v1", api_key=d.secret, max_retries=0)
    ask = {"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    client.chat.completions.create(**ask)  # the endpoint is now cached in the web process
    scope_limit_set(team=d.team, actor=actor(), endpoint=d.endpoint, rpm_limit=1)
    time.sleep(1.0)  # the invalidation reaches the process
    client.chat.completions.create(**ask)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(**ask)
    assert "endpoint requests per minute" in str(info.value)
