from __future__ import annotations

from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from controlplane.models.endpoints import Endpoint
from controlplane.models.keys import ApiKey
from controlplane.models.teams import Team


class BudgetScope(models.TextChoices):
    TEAM = "team", "Team"
    KEY = "key", "API key"
    ENDPOINT = "endpoint", "Endpoint"


class BudgetPeriod(models.TextChoices):
    DAY = "day", "Day"
    WEEK = "week", "Week"
    MONTH = "month", "Month"
    TOTAL = "total", "Total (never resets)"


class Budget(models.Model):
    """A spending limit in USD. Enforcement (reservations) happens in Redis on the request path;
    `spent_usd` is the settled spend of the current period, rolled up from usage records."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="budgets")
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=16, choices=BudgetScope.choices)
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    endpoint = models.ForeignKey(
        Endpoint, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    period = models.CharField(max_length=8, choices=BudgetPeriod.choices)
    limit_usd = models.DecimalField(
        max_digits=14, decimal_places=6, validators=[MinValueValidator(Decimal(0))]
    )
    hard = models.BooleanField(
        default=True, help_text="Hard: refuse requests past the limit. Soft: alert only."
    )
    alert_threshold = models.DecimalField(
        max_digits=4,
        decimal_places=3,
        default=Decimal("0.8"),
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(1))],
    )
    period_start = models.DateTimeField()
    spent_usd = models.DecimalField(max_digits=18, decimal_places=8, default=Decimal(0))
    alerted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team", "name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="budget_unique_team_name"),
            models.CheckConstraint(
                name="budget_scope_target_matches",
                condition=(
                    models.Q(scope="team", api_key__isnull=True, endpoint__isnull=True)
                    | models.Q(scope="key", api_key__isnull=False, endpoint__isnull=True)
                    | models.Q(scope="endpoint", api_key__isnull=True, endpoint__isnull=False)
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.limit_usd} USD / {self.period})"
