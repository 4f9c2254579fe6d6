"""Prompt services: create a prompt, add an immutable version, move a label, render a version.

Versions are numbered 1, 2, 3... per prompt under a row lock on the prompt, so concurrent
creators get consecutive numbers, never the same one. Labels move under a row lock on the label
(or, the first time, the unique constraint decides who creates it), so concurrent moves are
applied one after another, each with its own audit row and none lost.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from controlplane.models import Team
from controlplane.services.audit import Actor, audit_record, snapshot
from controlplane.services.common import unique_as_field_error
from controlplane.services.events import publish_after_commit
from prompts.models import Prompt, PromptLabel, PromptVersion
from prompts.rendering import (
    PromptTemplateError,
    RenderedPrompt,
    check_variables_schema,
    render,
    template_variables,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_LABEL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,49}$")
PROMPT_FIELDS = ["name", "description"]
VERSION_FIELDS = ["version", "system_message", "template", "variables_schema", "commit_message"]


def check_prompt_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValidationError(
            {"name": "use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"}
        )


def check_label_name(name: str) -> None:
    if not _LABEL.match(name):
        raise ValidationError(
            {"name": "use 1-50 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"}
        )


def prompt_create(*, team: Team, name: str, actor: Actor, description: str = "") -> Prompt:
    """Creates an empty prompt; its content comes with its first version."""
    check_prompt_name(name)
    taken = {"prompt_unique_team_name": ("name", f"this team already has a prompt named {name!r}")}
    with transaction.atomic():
        with unique_as_field_error(taken):
            prompt = Prompt.objects.create(team=team, name=name, description=description)
        audit_record(
            actor=actor,
            action="prompt.create",
            team_id=team.pk,
            target=prompt,
            after=snapshot(prompt, PROMPT_FIELDS),
        )
    return prompt


def validate_version_content(*, template: str, system_message: str, variables_schema: Any) -> None:
    """Raises ValidationError naming each field's problem: a template that does not parse (with its
    line), a schema that is not JSON Schema, a template variable the schema does not declare."""
    errors: dict[str, str] = {}
    used: set[str] = set()
    if not template.strip():
        errors["template"] = "must not be empty"
    for field, source in (("template", template), ("system_message", system_message)):
        try:
            used |= template_variables(source)
        except PromptTemplateError as exc:
            errors[field] = f"does not parse: {exc}"
    try:
        check_variables_schema(variables_schema)
    except ValueError as exc:
        errors["variables_schema"] = str(exc)
    else:
        declared = set(variables_schema.get("properties", {}))
        undeclared = sorted(used - declared) if declared else []
        if undeclared and "template" not in errors:
            errors["variables_schema"] = (
                f"the template uses {', '.join(map(repr, undeclared))}, which "
                "properties does not declare; declare every variable or none"
            )
    if errors:
        raise ValidationError(errors)


def prompt_version_create(
    *,
    prompt: Prompt,
    template: str,
    actor: Actor,
    system_message: str = "",
    variables_schema: dict[str, Any] | None = None,
    commit_message: str = "",
    created_by: AbstractBaseUser | None = None,
) -> PromptVersion:
    """Adds the next version of `prompt` (immutable from then on); `created_by`: the console user, if any."""
    schema = {} if variables_schema is None else variables_schema
    validate_version_content(template=template, system_message=system_message, variables_schema=schema)
    with transaction.atomic():
        # The prompt row lock serialises numbering: max+1 is only safe while nobody else can add one.
        Prompt.objects.select_for_update().only("pk").get(pk=prompt.pk)
        number = (PromptVersion.objects.filter(prompt=prompt).aggregate(n=Max("version"))["n"] or 0) + 1
        version = PromptVersion.objects.create(
            prompt=prompt,
            version=number,
            system_message=system_message,
            template=template,
            variables_schema=schema,
            commit_message=commit_message[:200],
            created_by_id=created_by.pk if created_by is not None else None,
        )
        audit_record(
            actor=actor,
            action="prompt_version.create",
            team_id=prompt.team_id,
            target=version,
            after=snapshot(version, VERSION_FIELDS),
        )
    return version


def _locked_label(prompt: Prompt, label: str, version: PromptVersion) -> tuple[PromptLabel, int | None]:
    """The label row, locked for this transaction, and the version number it pointed at (None: new).

    The lock query must not join: under READ COMMITTED, a row updated while we waited for its lock
    is re-checked against the *old* joined row, fails the join and silently drops out of the result.
    """
    locked = PromptLabel.objects.select_for_update()
    row = locked.filter(prompt=prompt, name=label).first()
    if row is None:
        try:
            with transaction.atomic():  # savepoint: losing the race to create it must not abort the move
                return PromptLabel.objects.create(prompt=prompt, name=label, version=version), None
        except IntegrityError:
            row = locked.get(prompt=prompt, name=label)
    return row, PromptVersion.objects.values_list("version", flat=True).get(pk=row.version_id)


def prompt_label_move(*, prompt: Prompt, label: str, version: PromptVersion, actor: Actor) -> PromptLabel:
    """Points `label` (created on first use) at `version`; a move to where it already points writes nothing.

    Publishes ("prompt", "<team id>/<prompt name>@<label>") after commit so gateways drop the cached lookup.
    """
    check_label_name(label)
    if version.prompt_id != prompt.pk:
        raise ValidationError({"version": f"version {version.version} belongs to another prompt"})
    with transaction.atomic():
        row, previous = _locked_label(prompt, label, version)
        if previous == version.version:
            return row
        if previous is not None:
            row.version = version
            row.save(update_fields=["version", "updated_at"])
        audit_record(
            actor=actor,
            action="prompt_label.move",
            team_id=prompt.team_id,
            target=row,
            before=None if previous is None else {"name": label, "version": previous},
            after={"name": label, "version": version.version},
        )
        publish_after_commit("prompt", f"{prompt.team_id}/{prompt.name}@{label}")
    return row


def prompt_render(version: PromptVersion, variables: Mapping[str, Any]) -> RenderedPrompt:
    """Renders a version with `variables`; raises PromptRenderError listing every problem by name."""
    return render(
        prompt_name=version.prompt.name,
        version=version.version,
        system_message=version.system_message,
        template=version.template,
        schema=version.variables_schema,
        variables=variables,
    )
