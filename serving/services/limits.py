"""Rate limits for a team, one of its endpoints, or one of its backends (keys carry their own)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from controlplane.models import Backend, Endpoint, Team
from controlplane.services.audit import Actor, audit_record, snapshot
from controlplane.services.events import publish_after_commit
from serving.models import ScopeLimit

AUDITED_FIELDS = ["endpoint", "backend", "rpm_limit", "tpm_limit", "concurrency_limit"]


def _validate(
    team: Team, endpoint: Endpoint | None, backend: Backend | None, limits: dict[str, int | None]
) -> None:
    if endpoint is not None and backend is not None:
        raise ValidationError({"endpoint": "limit an endpoint or a backend, not both in one row"})
    for target, field in ((endpoint, "endpoint"), (backend, "backend")):
        if target is not None and target.team_id != team.pk:
            raise ValidationError({field: f"this {field} belongs to another team"})
    for name, value in limits.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValidationError({name: "must be a whole number of at least 1, or empty for no limit"})


def scope_limit_set(
    *,
    team: Team,
    actor: Actor,
    endpoint: Endpoint | None = None,
    backend: Backend | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    concurrency_limit: int | None = None,
) -> ScopeLimit:
    """Creates or replaces the limits of one scope; every web process applies them within a second."""
    limits = {"rpm_limit": rpm_limit, "tpm_limit": tpm_limit, "concurrency_limit": concurrency_limit}
    _validate(team, endpoint, backend, limits)
    with transaction.atomic():
        row = (
            ScopeLimit.objects.select_for_update()
            .filter(team=team, endpoint=endpoint, backend=backend)
            .first()
        )
        before = snapshot(row, AUDITED_FIELDS) if row is not None else None
        if row is None:
            row = ScopeLimit(team=team, endpoint=endpoint, backend=backend)
        for name, value in limits.items():
            setattr(row, name, value)
        row.save()
        audit_record(
            actor=actor,
            action="scope_limit.set",
            team_id=team.pk,
            target=row,
            before=before,
            after=snapshot(row, AUDITED_FIELDS),
        )
        publish_after_commit("scope_limit", str(row.pk))
    return row


def scope_limit_delete(*, limit: ScopeLimit, actor: Actor) -> None:
    with transaction.atomic():
        before = snapshot(limit, AUDITED_FIELDS)
        audit_record(
            actor=actor, action="scope_limit.delete", team_id=limit.team_id, target=limit, before=before
        )
        limit.delete()
        publish_after_commit("scope_limit", "deleted")
