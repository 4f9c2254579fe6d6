"""Releases: immutable bundles of what serves a request.

There is deliberately no update or delete: a release that served traffic must keep meaning the
same thing for the audit log, usage records and roll back. Changing anything is a new release.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from controlplane.models import ModelVersion, Release, Team
from controlplane.services.audit import Actor, audit_record, snapshot
from controlplane.services.catalog import validate_generation_parameters
from controlplane.services.common import require_name, require_team, unique_as_field_error

AUDITED_FIELDS = [
    "name",
    "model_version_id",
    "prompt_version_id",
    "generation_defaults",
    "retrieval_config",
    "guardrail_policy",
    "notes",
]
_UNIQUE_NAME = {
    "release_unique_team_name": (
        "name",
        "this team already has a release with this name; releases are immutable, so pick a new name",
    )
}


def _json_slot(value: Any, field: str) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise ValidationError({field: "must be a JSON object or null"})
    return value


def release_create(
    *,
    team: Team,
    name: str,
    model_version: ModelVersion,
    actor: Actor,
    prompt_version: Any = None,
    generation_defaults: dict[str, Any] | None = None,
    retrieval_config: dict[str, Any] | None = None,
    guardrail_policy: dict[str, Any] | None = None,
    notes: str = "",
    created_by_id: int | None = None,
) -> Release:
    name = require_name(name)
    require_team(model_version, team.pk, "model_version", "model version")
    if prompt_version is not None and prompt_version.prompt.team_id != team.pk:
        raise ValidationError(
            {"prompt_version": "this prompt version belongs to another team; choose one of this team's"}
        )
    release = Release(
        team=team,
        name=name,
        model_version=model_version,
        prompt_version=prompt_version,
        generation_defaults=validate_generation_parameters(generation_defaults, field="generation_defaults"),
        retrieval_config=_json_slot(retrieval_config, "retrieval_config"),
        guardrail_policy=_json_slot(guardrail_policy, "guardrail_policy"),
        notes=notes,
        created_by_id=created_by_id,
    )
    with transaction.atomic():
        with unique_as_field_error(_UNIQUE_NAME):
            release.save(force_insert=True)
        audit_record(
            actor=actor,
            action="release.create",
            team_id=team.pk,
            target=release,
            after=snapshot(release, AUDITED_FIELDS),
        )
    return release
