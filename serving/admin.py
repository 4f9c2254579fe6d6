"""Admin for the serving app's own rows: scope rate limits (writes go through the service)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model

from controlplane.admin import ServiceForm, TeamScopedAdmin
from serving.models import ScopeLimit
from serving.services import limits as limit_services


class ScopeLimitForm(ServiceForm):
    class Meta:
        model = ScopeLimit
        fields = ["team", "endpoint", "backend", "rpm_limit", "tpm_limit", "concurrency_limit"]

    def apply(self, data: dict[str, Any]) -> Model:
        return limit_services.scope_limit_set(
            team=data["team"],
            actor=self.actor,
            endpoint=data.get("endpoint"),
            backend=data.get("backend"),
            rpm_limit=data.get("rpm_limit"),
            tpm_limit=data.get("tpm_limit"),
            concurrency_limit=data.get("concurrency_limit"),
        )


@admin.register(ScopeLimit)
class ScopeLimitAdmin(TeamScopedAdmin):
    form = ScopeLimitForm
    admin_only = True
    list_display = ["__str__", "team", "endpoint", "backend", "rpm_limit", "tpm_limit", "concurrency_limit"]
    list_filter = ["team"]
    delete_service = staticmethod(limit_services.scope_limit_delete)  # type: ignore[assignment]
    delete_arg = "limit"

    def get_readonly_fields(self, request: Any, obj: Any = None) -> list[str]:
        # A row's scope is its identity: to limit something else, add a row.
        return ["team", "endpoint", "backend"] if obj else []
