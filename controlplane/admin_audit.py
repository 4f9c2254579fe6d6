"""Admin views of the audit log: read-only (no add, change or delete for anyone, superusers
included; the database refuses UPDATE and DELETE anyway), team-scoped for non-superusers."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from controlplane.audit.query import audit_readable_team_ids
from controlplane.models import AuditDigest, AuditEvent


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return {}  # no bulk delete


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "occurred_at",
        "team_id",
        "actor_type",
        "actor_label",
        "action",
        "target_type",
        "target_id",
        "target_label",
        "outcome",
        "request_id",
    ]
    list_filter = ["action", "actor_type", "outcome", "occurred_at"]
    search_fields = ["=target_id", "target_label", "=target_type", "=request_id"]
    date_hierarchy = "occurred_at"
    show_full_result_count = False  # a second COUNT(*) over millions of rows on every search
    ordering = ["-id"]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        readable = audit_readable_team_ids(request.user)
        if readable is None:
            return True
        if obj is None:
            return bool(readable)
        return obj.team_id in readable

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        events = super().get_queryset(request)
        readable = audit_readable_team_ids(request.user)
        return events if readable is None else events.filter(team_id__in=readable)


@admin.register(AuditDigest)
class AuditDigestAdmin(ReadOnlyAdmin):
    """Digests cover every team at once, so only superusers see them."""

    list_display = ["period_end", "event_count", "first_event_id", "last_event_id", "head_hash", "signature"]
    list_filter = ["period_end"]
    search_fields = ["=head_hash", "=signature"]
    ordering = ["-period_end"]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(getattr(request.user, "is_superuser", False))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)
