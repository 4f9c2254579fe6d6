"""Teams and their membership. A team always keeps at least one owner."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.text import slugify

from controlplane.models import Membership, Role, Team
from controlplane.services.audit import Actor, audit_record, snapshot
from controlplane.services.common import require_name, unique_as_field_error

TEAM_FIELDS = ["name", "slug"]
MEMBERSHIP_FIELDS = ["user_id", "role"]


def _team_unique() -> dict[str, tuple[str, str]]:
    return {
        "controlplane_team_name_key": ("name", "a team with this name already exists; choose another name"),
        "controlplane_team_slug_key": ("slug", "a team with this slug already exists; choose another slug"),
    }


def team_create(*, name: str, actor: Actor, slug: str = "", owner: Any = None) -> Team:
    """Creates a team; `owner` (a user), when given, becomes its first owner."""
    name = require_name(name)
    slug = slug or slugify(name)
    if not slug:
        raise ValidationError({"slug": "give a slug of letters, digits, hyphens or underscores"})
    with transaction.atomic():
        with unique_as_field_error(_team_unique()):
            team = Team.objects.create(name=name, slug=slug)
        audit_record(
            actor=actor, action="team.create", team_id=team.pk, target=team, after=snapshot(team, TEAM_FIELDS)
        )
        if owner is not None:
            membership_add(team=team, user=owner, role=Role.OWNER, actor=actor)
    return team


def team_update(*, team: Team, actor: Actor, name: str | None = None, slug: str | None = None) -> Team:
    with transaction.atomic():
        locked = Team.objects.select_for_update().get(pk=team.pk)
        before = snapshot(locked, TEAM_FIELDS)
        locked.name = locked.name if name is None else require_name(name)
        locked.slug = locked.slug if slug is None else slug
        with unique_as_field_error(_team_unique()):
            locked.save(update_fields=["name", "slug"])
        audit_record(
            actor=actor,
            action="team.update",
            team_id=locked.pk,
            target=locked,
            before=before,
            after=snapshot(locked, TEAM_FIELDS),
        )
    return locked


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise ValidationError({"role": f"choose one of {[r.value for r in Role]}"}) from None


def membership_add(*, team: Team, user: Any, role: str, actor: Actor) -> Membership:
    role = _role(role)
    with transaction.atomic():
        unique = {"membership_unique_team_user": ("user", "this user is already a member; change their role")}
        with unique_as_field_error(unique):
            membership = Membership.objects.create(team=team, user=user, role=role)
        audit_record(
            actor=actor,
            action="membership.add",
            team_id=team.pk,
            target=membership,
            after=snapshot(membership, MEMBERSHIP_FIELDS),
        )
    return membership


def _ensure_owner_remains(membership: Membership) -> None:
    """Raises when `membership` is the team's last owner (the team would become unmanageable)."""
    if membership.role != Role.OWNER:
        return
    # Lock every owner row so two concurrent demotions cannot both see "another owner exists".
    owners = list(
        Membership.objects.select_for_update()
        .filter(team_id=membership.team_id, role=Role.OWNER)
        .values_list("pk", flat=True)
    )
    if owners == [membership.pk]:
        raise ValidationError({"role": "a team needs at least one owner; make someone else owner first"})


def membership_change_role(*, membership: Membership, role: str, actor: Actor) -> Membership:
    role = _role(role)
    with transaction.atomic():
        locked = Membership.objects.select_for_update().get(pk=membership.pk)
        if locked.role == role:
            return locked
        if role != Role.OWNER:
            _ensure_owner_remains(locked)
        before = snapshot(locked, MEMBERSHIP_FIELDS)
        locked.role = role
        locked.save(update_fields=["role"])
        audit_record(
            actor=actor,
            action="membership.change_role",
            team_id=locked.team_id,
            target=locked,
            before=before,
            after=snapshot(locked, MEMBERSHIP_FIELDS),
        )
    return locked


def membership_remove(*, membership: Membership, actor: Actor) -> None:
    with transaction.atomic():
        locked = Membership.objects.select_for_update().get(pk=membership.pk)
        _ensure_owner_remains(locked)
        before = snapshot(locked, MEMBERSHIP_FIELDS)
        audit_record(
            actor=actor,
            action="membership.remove",
            team_id=locked.team_id,
            target=locked,
            before=before,
            after=None,
        )
        locked.delete()
