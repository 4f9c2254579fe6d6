"""Budget tasks: period resets and alert checks, run by Celery beat every minute."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from controlplane.services.audit import Actor
from controlplane.services.budgets import budget_rollover as run_rollover


@shared_task(name="controlplane.budget_rollover")
def budget_rollover() -> dict[str, int]:
    """Idempotent (each reset and alert is claimed with a conditional update), so a retried or
    duplicated tick changes nothing twice."""
    report = run_rollover(now=timezone.now(), actor=Actor.system("celery beat: budget rollover"))
    return {"reset": report.reset, "alerted": report.alerted}
