"""Reads for prompts: what a caller may see, and label/number lookups for the gateway."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from controlplane.models import Team
from controlplane.permissions import visible_teams
from prompts.models import Prompt, PromptLabel, PromptVersion


def prompts_visible_to(user: Any) -> QuerySet[Prompt]:
    return Prompt.objects.filter(team__in=visible_teams(user)).select_related("team")


def prompt_versions_visible_to(user: Any) -> QuerySet[PromptVersion]:
    return PromptVersion.objects.filter(prompt__team__in=visible_teams(user)).select_related(
        "prompt", "created_by"
    )


def prompt_labels_visible_to(user: Any) -> QuerySet[PromptLabel]:
    return PromptLabel.objects.filter(prompt__team__in=visible_teams(user)).select_related(
        "prompt", "version"
    )


def prompt_version_by_label(team: Team | int, name: str, label: str) -> PromptVersion:
    """The version `label` points at on the team's prompt `name`; raises PromptVersion.DoesNotExist."""
    team_id = team.pk if isinstance(team, Team) else team
    return PromptVersion.objects.select_related("prompt").get(
        prompt__team_id=team_id, prompt__name=name, labels__name=label
    )


def prompt_version_by_number(team: Team | int, name: str, number: int) -> PromptVersion:
    team_id = team.pk if isinstance(team, Team) else team
    return PromptVersion.objects.select_related("prompt").get(
        prompt__team_id=team_id, prompt__name=name, version=number
    )
