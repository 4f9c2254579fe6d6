"""Budgets API. Owners and admins manage budgets; everyone in the team reads them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.api.base import ADMIN, ScopedRelatedField, StrictInput, TeamField, TeamScopedViewSet
from controlplane.models import Budget, BudgetPeriod, BudgetScope
from controlplane.permissions import actor_for
from controlplane.selectors import api_keys_for, budgets_for, endpoints_for
from controlplane.services.budgets import budget_create, budget_delete, budget_update, period_end_for


class BudgetSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    period_end = serializers.SerializerMethodField()

    class Meta:
        model = Budget
        fields = [
            "id",
            "team",
            "name",
            "scope",
            "api_key",
            "endpoint",
            "period",
            "limit_usd",
            "hard",
            "alert_threshold",
            "period_start",
            "period_end",
            "spent_usd",
            "alerted_at",
            "created_at",
        ]

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_period_end(self, budget: Budget) -> datetime | None:
        end = period_end_for(budget.period, budget.period_start)
        return end


def _money(**kwargs: Any) -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=14, decimal_places=6, min_value=0, **kwargs)


def _threshold(**kwargs: Any) -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=4, decimal_places=3, min_value=0, max_value=1, **kwargs)


class BudgetUpdateInput(StrictInput):
    name = serializers.CharField(max_length=100, required=False)
    limit_usd = _money(required=False)
    hard = serializers.BooleanField(required=False)
    alert_threshold = _threshold(required=False)


class BudgetInput(StrictInput):
    team = TeamField(required=False)
    name = serializers.CharField(max_length=100)
    scope = serializers.ChoiceField(choices=BudgetScope.choices)
    api_key = ScopedRelatedField(api_keys_for, required=False, allow_null=True)
    endpoint = ScopedRelatedField(endpoints_for, required=False, allow_null=True)
    period = serializers.ChoiceField(choices=BudgetPeriod.choices)
    limit_usd = _money()
    hard = serializers.BooleanField(default=True)
    alert_threshold = _threshold(required=False)


class BudgetViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TeamScopedViewSet
):
    """Spending limits in USD per team, key or endpoint and period (day, week, month in UTC, or total)."""

    serializer_class = BudgetSerializer
    write_role = ADMIN

    def get_queryset(self) -> Any:
        return budgets_for(self.request.user)

    @extend_schema(request=BudgetInput, responses={201: BudgetSerializer})
    def create(self, request: Request) -> Response:
        data = self.input(BudgetInput)
        self.authorize_create(data["team"])
        budget = budget_create(actor=actor_for(request), **data)
        return Response(self.get_serializer(budget).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=BudgetUpdateInput, responses=BudgetSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        budget = self.get_object()
        budget = budget_update(
            budget=budget, actor=actor_for(request), **self.input(BudgetUpdateInput, partial=True)
        )
        return Response(self.get_serializer(budget).data)

    def perform_destroy(self, instance: Budget) -> None:
        budget_delete(budget=instance, actor=actor_for(self.request))
