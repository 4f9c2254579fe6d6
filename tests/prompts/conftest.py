"""A prompt of `team` with two versions and `production` on v1, plus one of `other_team`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from controlplane.services.audit import Actor
from prompts.models import Prompt, PromptVersion
from prompts.services import prompt_create, prompt_label_move, prompt_version_create

SCHEMA = {
    "type": "object",
    "properties": {"customer": {"type": "string"}, "n": {"type": "integer", "minimum": 1}},
    "required": ["customer"],
}


@dataclass
class PromptWorld:
    prompt: Prompt
    v1: PromptVersion
    v2: PromptVersion
    other: Prompt


@pytest.fixture
def prompts(team: Any, other_team: Any) -> PromptWorld:
    actor = Actor.system("fixture")
    prompt = prompt_create(team=team, name="support-reply", description="replies", actor=actor)
    v1 = prompt_version_create(
        prompt=prompt,
        template="Hello {{ customer }}",
        variables_schema=SCHEMA,
        system_message="You are terse.",
        actor=actor,
    )
    v2 = prompt_version_create(
        prompt=prompt,
        template="Hi {{ customer }}, {{ n | default(1) }} items",
        variables_schema=SCHEMA,
        actor=actor,
    )
    prompt_label_move(prompt=prompt, label="production", version=v1, actor=actor)
    other = prompt_create(team=other_team, name="support-reply", actor=actor)
    prompt_version_create(prompt=other, template="theirs {{ x }}", actor=actor)
    return PromptWorld(prompt=prompt, v1=v1, v2=v2, other=other)
