"""Budgets: API validation, period resets and once-per-period alerts, directly and through the
real Celery worker running the beat task `controlplane.budget_rollover`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from controlplane.models import AuditEvent, Budget
from controlplane.services.audit import Actor
from controlplane.services.budgets import budget_rollover, period_end_for, period_start_for
from controlplane.tasks.budgets import budget_rollover as rollover_task
from tests.factories import BudgetFactory, TeamFactory

SYSTEM = Actor.system("test")


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        (
            "day",
            datetime(2026, 3, 4, 15, 30, tzinfo=UTC),
            datetime(2026, 3, 4, tzinfo=UTC),
            datetime(2026, 3, 5, tzinfo=UTC),
        ),
        (
            "week",
            datetime(2026, 3, 4, 15, 30, tzinfo=UTC),
            datetime(2026, 3, 2, tzinfo=UTC),
            datetime(2026, 3, 9, tzinfo=UTC),
        ),
        (
            "month",
            datetime(2026, 12, 31, 23, 59, tzinfo=UTC),
            datetime(2026, 12, 1, tzinfo=UTC),
            datetime(2027, 1, 1, tzinfo=UTC),
        ),
        (
            "month",
            datetime(2026, 2, 10, tzinfo=UTC),
            datetime(2026, 2, 1, tzinfo=UTC),
            datetime(2026, 3, 1, tzinfo=UTC),
        ),
    ],
)
def test_periods_are_calendar_aligned_in_utc(period, now, start, end):
    assert period_start_for(period, now) == start and period_end_for(period, start) == end


def test_total_budgets_never_end():
    assert period_end_for("total", datetime(2026, 1, 1, tzinfo=UTC)) is None


@pytest.mark.django_db
def test_an_ended_period_resets_once_with_an_audit_row():
    now = timezone.now()
    yesterday = period_start_for("day", now) - timedelta(days=1)
    budget = BudgetFactory(period="day", period_start=yesterday, spent_usd=Decimal("7.5"), alerted_at=now)
    current = BudgetFactory(team=budget.team, period="day", spent_usd=Decimal("1"))
    total = BudgetFactory(
        team=budget.team, period="total", period_start=now - timedelta(days=400), spent_usd=Decimal("3")
    )
    report = budget_rollover(now=now, actor=SYSTEM)
    assert report.reset == 1
    budget.refresh_from_db()
    assert (budget.period_start, budget.spent_usd, budget.alerted_at) == (
        period_start_for("day", now),
        0,
        None,
    )
    current.refresh_from_db()
    total.refresh_from_db()
    assert current.spent_usd == Decimal("1") and total.spent_usd == Decimal("3")
    event = AuditEvent.objects.get(action="budget.reset")
    assert event.target_id == str(budget.pk) and event.diff["before"]["spent_usd"] == "7.50000000"
    assert budget_rollover(now=now, actor=SYSTEM).reset == 0  # idempotent
    assert AuditEvent.objects.filter(action="budget.reset").count() == 1


@pytest.mark.django_db
def test_a_budget_that_missed_several_periods_jumps_to_the_current_one():
    now = timezone.now()
    budget = BudgetFactory(period="week", period_start=period_start_for("week", now) - timedelta(weeks=5))
    budget_rollover(now=now, actor=SYSTEM)
    budget.refresh_from_db()
    assert budget.period_start == period_start_for("week", now)


@pytest.mark.django_db
def test_alert_fires_once_per_period_at_the_threshold():
    now = timezone.now()
    budget = BudgetFactory(limit_usd=Decimal("10"), alert_threshold=Decimal("0.8"), spent_usd=Decimal("7.99"))
    assert budget_rollover(now=now, actor=SYSTEM).alerted == 0
    Budget.objects.filter(pk=budget.pk).update(spent_usd=Decimal("8.00"))
    assert budget_rollover(now=now, actor=SYSTEM).alerted == 1
    assert budget_rollover(now=now, actor=SYSTEM).alerted == 0
    event = AuditEvent.objects.get(action="budget.alert")
    assert event.target_id == str(budget.pk) and event.diff["after"]["limit_usd"] == "10.000000"
    # A new period re-arms it.
    Budget.objects.filter(pk=budget.pk).update(period_start=budget.period_start - timedelta(days=1))
    budget_rollover(now=now, actor=SYSTEM)
    Budget.objects.filter(pk=budget.pk).update(spent_usd=Decimal("9"))
    assert budget_rollover(now=now, actor=SYSTEM).alerted == 1
    assert AuditEvent.objects.filter(action="budget.alert").count() == 2


@pytest.mark.django_db(transaction=True)
def test_rollover_runs_through_the_real_celery_worker(celery_worker_process):
    team = TeamFactory()
    now = timezone.now()
    stale = BudgetFactory(
        team=team,
        period="day",
        period_start=period_start_for("day", now) - timedelta(days=2),
        spent_usd=Decimal("4"),
    )
    hot = BudgetFactory(
        team=team, limit_usd=Decimal("1"), spent_usd=Decimal("0.95"), alert_threshold=Decimal("0.9")
    )
    result = rollover_task.delay().get(timeout=60)
    assert result["reset"] >= 1 and result["alerted"] >= 1
    stale.refresh_from_db()
    hot.refresh_from_db()
    assert stale.spent_usd == 0 and stale.period_start == period_start_for("day", timezone.now())
    assert hot.alerted_at is not None
    assert (
        AuditEvent.objects.filter(action="budget.alert", target_id=str(hot.pk), actor_type="system").count()
        == 1
    )
    rollover_task.delay().get(timeout=60)  # a second tick changes nothing
    assert (
        AuditEvent.objects.filter(action__in=["budget.reset", "budget.alert"], team_id=team.pk).count() == 2
    )


# --- API -----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_key_scoped_budget_is_created_for_the_current_period(owner_client, world):
    response = owner_client.post(
        "/api/budgets/",
        {
            "name": "app-daily",
            "scope": "key",
            "api_key": world.key.pk,
            "period": "day",
            "limit_usd": "12.50",
            "hard": False,
            "alert_threshold": "0.5",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["limit_usd"], body["spent_usd"], body["hard"]) == ("12.500000", "0.00000000", False)
    start = datetime.fromisoformat(body["period_start"])
    assert start == period_start_for("day", timezone.now())
    assert datetime.fromisoformat(body["period_end"]) == start + timedelta(days=1)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "error_field"),
    [
        ({"scope": "key"}, "scope"),  # no api_key
        ({"scope": "team", "endpoint": "ENDPOINT"}, "scope"),
        ({"limit_usd": "-1"}, "limit_usd"),
        ({"limit_usd": "123456789012"}, "limit_usd"),
        ({"alert_threshold": "1.5"}, "alert_threshold"),
        ({"period": "fortnight"}, "period"),
        ({"scope": "galaxy"}, "scope"),
        ({"name": "daily"}, "name"),
    ],
)
def test_bad_budget_input_is_400_and_writes_nothing(owner_client, world, fields, error_field):
    payload = {"name": "b", "scope": "team", "period": "day", "limit_usd": "5", **fields}
    if payload.get("endpoint") == "ENDPOINT":
        payload["endpoint"] = world.endpoint.pk
    count = Budget.objects.count()
    response = owner_client.post("/api/budgets/", payload, format="json")
    assert response.status_code == 400 and error_field in response.json(), response.content
    assert Budget.objects.count() == count


@pytest.mark.django_db
def test_budget_for_another_teams_key_is_400(owner_client, world, other_world):
    response = owner_client.post(
        "/api/budgets/",
        {"name": "b", "scope": "key", "api_key": other_world.key.pk, "period": "day", "limit_usd": "5"},
        format="json",
    )
    assert response.status_code == 400 and "api_key" in response.json()


@pytest.mark.django_db
def test_raising_the_limit_re_arms_the_alert(owner_client, world):
    Budget.objects.filter(pk=world.budget.pk).update(spent_usd=Decimal("9"), alerted_at=timezone.now())
    response = owner_client.patch(f"/api/budgets/{world.budget.pk}/", {"limit_usd": "100"}, format="json")
    assert response.status_code == 200 and response.json()["alerted_at"] is None
