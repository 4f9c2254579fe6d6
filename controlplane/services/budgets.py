"""Budgets: spending limits per team, key or endpoint, with calendar periods in UTC.

This module stores and manages them and runs the period machinery (reset, threshold alert).
Holding requests to a budget happens on the request path in the gateway, with reservations in
Redis; `spent_usd` is the settled spend it rolls up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from controlplane.models import ApiKey, Budget, BudgetPeriod, BudgetScope, Endpoint, Team
from controlplane.services.audit import Actor, audit_record, snapshot
from controlplane.services.common import require_name, require_team, unique_as_field_error
from controlplane.services.events import publish_after_commit

logger = logging.getLogger(__name__)
AUDITED_FIELDS = [
    "name",
    "scope",
    "api_key_id",
    "endpoint_id",
    "period",
    "limit_usd",
    "hard",
    "alert_threshold",
    "period_start",
]
MAX_LIMIT = Decimal("99999999")  # the column holds 8 integer digits
_UNIQUE_NAME = {"budget_unique_team_name": ("name", "this team already has a budget with this name")}


# --- Periods ----------------------------------------------------------------------------------------


def period_start_for(period: str, now: datetime) -> datetime:
    """The start (UTC, calendar-aligned: midnight, Monday, the 1st) of the period containing `now`.
    A `total` budget never resets, so its period starts when it is created."""
    utc = now.astimezone(UTC)
    day = utc.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == BudgetPeriod.DAY:
        return day
    if period == BudgetPeriod.WEEK:
        return day - timedelta(days=day.weekday())
    if period == BudgetPeriod.MONTH:
        return day.replace(day=1)
    return utc


def period_end_for(period: str, start: datetime) -> datetime | None:
    if period == BudgetPeriod.DAY:
        return start + timedelta(days=1)
    if period == BudgetPeriod.WEEK:
        return start + timedelta(days=7)
    if period == BudgetPeriod.MONTH:
        return (start.replace(day=1) + timedelta(days=32)).replace(day=1)
    return None


# --- Validation ----------------------------------------------------------------------------------------


def _decimal(value: Any, field: str, low: Decimal, high: Decimal) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValidationError({field: "must be a decimal number"}) from None
    if not number.is_finite() or not low <= number <= high:
        raise ValidationError({field: f"must be between {low} and {high}"})
    return number


def _validate_target(team: Team, scope: str, api_key: ApiKey | None, endpoint: Endpoint | None) -> None:
    if scope not in BudgetScope.values:
        raise ValidationError({"scope": f"choose one of {BudgetScope.values}"})
    wanted = {
        BudgetScope.TEAM: (False, False),
        BudgetScope.KEY: (True, False),
        BudgetScope.ENDPOINT: (False, True),
    }
    if (api_key is not None, endpoint is not None) != wanted[BudgetScope(scope)]:
        raise ValidationError(
            {
                "scope": "scope 'team' takes neither api_key nor endpoint; 'key' takes api_key "
                "only; 'endpoint' takes endpoint only"
            }
        )
    require_team(api_key, team.pk, "api_key", "API key")
    require_team(endpoint, team.pk, "endpoint", "endpoint")


# --- Writes --------------------------------------------------------------------------------------------


def budget_create(
    *,
    team: Team,
    name: str,
    scope: str,
    period: str,
    limit_usd: Decimal,
    actor: Actor,
    api_key: ApiKey | None = None,
    endpoint: Endpoint | None = None,
    hard: bool = True,
    alert_threshold: Decimal = Decimal("0.8"),
) -> Budget:
    name = require_name(name)
    _validate_target(team, scope, api_key, endpoint)
    if period not in BudgetPeriod.values:
        raise ValidationError({"period": f"choose one of {BudgetPeriod.values}"})
    budget = Budget(
        team=team,
        name=name,
        scope=scope,
        api_key=api_key,
        endpoint=endpoint,
        period=period,
        limit_usd=_decimal(limit_usd, "limit_usd", Decimal(0), MAX_LIMIT),
        hard=hard,
        alert_threshold=_decimal(alert_threshold, "alert_threshold", Decimal(0), Decimal(1)),
        period_start=period_start_for(period, timezone.now()),
    )
    with transaction.atomic():
        with unique_as_field_error(_UNIQUE_NAME):
            budget.save(force_insert=True)
        audit_record(
            actor=actor,
            action="budget.create",
            team_id=team.pk,
            target=budget,
            after=snapshot(budget, AUDITED_FIELDS),
        )
        publish_after_commit("budget", str(budget.pk))
    return budget


def budget_update(
    *,
    budget: Budget,
    actor: Actor,
    name: str | None = None,
    limit_usd: Decimal | None = None,
    hard: bool | None = None,
    alert_threshold: Decimal | None = None,
) -> Budget:
    """Changes name, limit, hardness or threshold. Scope and period are fixed: a different one is a
    different budget. Raising the alert line above the current spend re-arms the alert."""
    with transaction.atomic():
        locked = Budget.objects.select_for_update().get(pk=budget.pk)
        before = snapshot(locked, AUDITED_FIELDS)
        locked.name = locked.name if name is None else require_name(name)
        locked.hard = locked.hard if hard is None else hard
        if limit_usd is not None:
            locked.limit_usd = _decimal(limit_usd, "limit_usd", Decimal(0), MAX_LIMIT)
        if alert_threshold is not None:
            locked.alert_threshold = _decimal(alert_threshold, "alert_threshold", Decimal(0), Decimal(1))
        if locked.spent_usd < locked.alert_threshold * locked.limit_usd:
            locked.alerted_at = None
        with unique_as_field_error(_UNIQUE_NAME):
            locked.save(update_fields=["name", "hard", "limit_usd", "alert_threshold", "alerted_at"])
        audit_record(
            actor=actor,
            action="budget.update",
            team_id=locked.team_id,
            target=locked,
            before=before,
            after=snapshot(locked, AUDITED_FIELDS),
        )
        publish_after_commit("budget", str(locked.pk))
    return locked


def budget_delete(*, budget: Budget, actor: Actor) -> None:
    with transaction.atomic():
        locked = Budget.objects.select_for_update().get(pk=budget.pk)
        audit_record(
            actor=actor,
            action="budget.delete",
            team_id=locked.team_id,
            target=locked,
            before=snapshot(locked, AUDITED_FIELDS),
            after=None,
        )
        publish_after_commit("budget", str(locked.pk))
        locked.delete()


# --- Period machinery (Celery beat) ------------------------------------------------------------------


@dataclass(frozen=True)
class RolloverReport:
    reset: int
    alerted: int


def _reset_one(budget: Budget, new_start: datetime, actor: Actor) -> bool:
    """Starts a new period unless another worker already did (the old start is the claim)."""
    with transaction.atomic():
        claimed = Budget.objects.filter(pk=budget.pk, period_start=budget.period_start).update(
            period_start=new_start, spent_usd=Decimal(0), alerted_at=None
        )
        if not claimed:
            return False
        audit_record(
            actor=actor,
            action="budget.reset",
            team_id=budget.team_id,
            target=budget,
            before={"period_start": budget.period_start, "spent_usd": budget.spent_usd},
            after={"period_start": new_start, "spent_usd": Decimal(0)},
        )
        publish_after_commit("budget", str(budget.pk))
    return True


def budget_reset_due(*, now: datetime, actor: Actor) -> int:
    """Resets every day/week/month budget whose period has ended. Idempotent: a second run (or a
    second worker) finds nothing due. A budget that missed several periods jumps to the current one."""
    reset = 0
    for period in (BudgetPeriod.DAY, BudgetPeriod.WEEK, BudgetPeriod.MONTH):
        new_start = period_start_for(period, now)
        for budget in Budget.objects.filter(period=period, period_start__lt=new_start):
            reset += _reset_one(budget, new_start, actor)
    return reset


def _alert_one(budget: Budget, now: datetime, actor: Actor) -> bool:
    with transaction.atomic():
        claimed = Budget.objects.filter(
            pk=budget.pk, period_start=budget.period_start, alerted_at__isnull=True
        ).update(alerted_at=now)
        if not claimed:
            return False
        audit_record(
            actor=actor,
            action="budget.alert",
            team_id=budget.team_id,
            target=budget,
            after={
                "spent_usd": budget.spent_usd,
                "limit_usd": budget.limit_usd,
                "alert_threshold": budget.alert_threshold,
                "period_start": budget.period_start,
                "hard": budget.hard,
            },
        )
    logger.warning("budget alert", extra={"budget_id": budget.pk, "team_id": budget.team_id})
    return True


def budget_alert_due(*, now: datetime, actor: Actor) -> int:
    """Raises the threshold alert once per period for each budget whose spend reached
    alert_threshold x limit."""
    due = Budget.objects.filter(alerted_at__isnull=True, spent_usd__gte=F("alert_threshold") * F("limit_usd"))
    return sum(_alert_one(budget, now, actor) for budget in due)


def budget_rollover(*, now: datetime, actor: Actor) -> RolloverReport:
    """One beat tick: resets first, so a period that just ended cannot alert on last period's spend."""
    reset = budget_reset_due(now=now, actor=actor)
    return RolloverReport(reset=reset, alerted=budget_alert_due(now=now, actor=actor))
