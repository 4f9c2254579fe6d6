"""Audit tasks: the hourly signed digest."""

from __future__ import annotations

from celery import shared_task

from controlplane.audit.digest import audit_digests_close


@shared_task(name="controlplane.audit_digest")
def audit_digest() -> dict[str, object]:
    """Closes every finished hour with a signed digest. Idempotent: the periods already closed are
    skipped under the chain lock, so a retried or duplicated run writes nothing twice."""
    created = audit_digests_close()
    return {"created": len(created), "period_ends": [d.period_end.isoformat() for d in created]}
