"""Audit API: list events, and export them as JSONL or CSV (streamed, and itself audited).

Team owners and admins read their teams' events; superusers read everything; API keys and
developers/viewers read nothing (403 with the reason). Other teams' events are simply not there.
"""

from __future__ import annotations

from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.db.models import QuerySet
from django.http import Http404, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, pagination, permissions, serializers, viewsets
from rest_framework.request import Request
from rest_framework.views import APIView

from controlplane.audit.export import CONTENT_TYPES, ExportStream
from controlplane.audit.query import AuditQuery, AuditQueryError, audit_events, audit_readable_team_ids
from controlplane.models import AuditEvent
from controlplane.permissions import actor_for
from controlplane.services.audit import audit_export_record


class AuditReader(permissions.BasePermission):
    message = "the audit log is readable by team owners and admins (and superusers); API keys cannot read it"

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        readable = audit_readable_team_ids(request.user)
        return readable is None or bool(readable)


FILTER_PARAMETERS = [
    OpenApiParameter(
        "since", OpenApiTypes.DATETIME, description="ISO 8601 time or date, inclusive (UTC if no offset)"
    ),
    OpenApiParameter("until", OpenApiTypes.DATETIME, description="ISO 8601 time or date, exclusive"),
    OpenApiParameter(
        "actor", OpenApiTypes.STR, description="user:<id>, api_key:<id>, system, or an actor label"
    ),
    OpenApiParameter(
        "action", OpenApiTypes.STR, description="exact action, or a prefix ending in * (prompt_label.*)"
    ),
    OpenApiParameter("target", OpenApiTypes.STR, description="target type, or type:id (prompts.prompt:5)"),
    OpenApiParameter("team", OpenApiTypes.INT, description="one team id (one you own or administer)"),
]


def _scope(request: Request) -> tuple[AuditQuery, list[int] | None]:
    """The caller's filters and the teams they cover; 400 for a bad filter, 404 for a team not theirs."""
    try:
        query = AuditQuery.parse(request.query_params)
    except AuditQueryError as exc:
        raise exceptions.ValidationError({exc.field: [exc.message]}) from None
    readable = audit_readable_team_ids(request.user)
    if query.team_id is not None:
        if readable is not None and query.team_id not in readable:
            raise Http404("team: no team with this id whose audit log you can read")
        return query, [query.team_id]
    return query, readable


class AuditEventSerializer(serializers.ModelSerializer[AuditEvent]):
    actor = serializers.SerializerMethodField()
    target = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "occurred_at",
            "team_id",
            "actor",
            "action",
            "target",
            "diff",
            "outcome",
            "request_id",
            "ip",
            "prev_hash",
            "row_hash",
        ]

    def get_actor(self, event: AuditEvent) -> dict[str, str]:
        return {"type": event.actor_type, "id": event.actor_id, "label": event.actor_label}

    def get_target(self, event: AuditEvent) -> dict[str, str]:
        return {"type": event.target_type, "id": event.target_id, "label": event.target_label}


class NewestFirst(pagination.CursorPagination):
    # A cursor, not an offset: no COUNT(*) and no deep OFFSET scans over a log of millions of rows.
    ordering = "-id"
    page_size = 100
    max_page_size = 1000
    page_size_query_param = "limit"


@extend_schema_view(list=extend_schema(parameters=FILTER_PARAMETERS))
class AuditEventViewSet(viewsets.ReadOnlyModelViewSet[AuditEvent]):
    """Audit events, newest first. Filters: since, until, actor, action, target, team."""

    serializer_class = AuditEventSerializer
    permission_classes = [AuditReader]
    pagination_class = NewestFirst

    def get_queryset(self) -> QuerySet[AuditEvent]:
        if self.action == "retrieve":
            return audit_events(AuditQuery(), team_ids=audit_readable_team_ids(self.request.user))
        query, team_ids = _scope(self.request)
        return audit_events(query, team_ids=team_ids)


class AuditExportView(APIView):
    """GET /api/audit/export.jsonl|csv — the filtered log as a streamed download."""

    permission_classes = [AuditReader]
    fmt = "jsonl"

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # The body is JSONL or CSV whatever the Accept header says; errors still render as JSON.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        parameters=FILTER_PARAMETERS,
        responses={(200, "application/x-ndjson"): OpenApiTypes.STR, (200, "text/csv"): OpenApiTypes.STR},
        description="Streams the filtered audit log (JSONL: OCSF API Activity records; CSV: flat columns). "
        "Records an audit.export event first.",
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        query, team_ids = _scope(request)
        audit_export_record(
            actor=actor_for(request), fmt=self.fmt, filters=query.as_dict(), team_ids=team_ids
        )
        stream = ExportStream(audit_events(query, team_ids=team_ids), self.fmt)
        content: Any = stream.aiter() if isinstance(request._request, ASGIRequest) else iter(stream)
        response = StreamingHttpResponse(content, content_type=CONTENT_TYPES[self.fmt])
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{self.fmt}"'
        return response
