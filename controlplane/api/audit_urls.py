"""Audit API routes: events (list, retrieve) and the JSONL/CSV exports."""

from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from controlplane.api.audit import AuditEventViewSet, AuditExportView

router = SimpleRouter()
router.register("events", AuditEventViewSet, basename="audit-event")

urlpatterns: list[URLPattern | URLResolver] = [
    path("export.jsonl", AuditExportView.as_view(fmt="jsonl"), name="audit-export-jsonl"),
    path("export.csv", AuditExportView.as_view(fmt="csv"), name="audit-export-csv"),
    *router.urls,
]
