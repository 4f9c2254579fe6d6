"""Hourly signed digests, CloudTrail style: each closes one hour of the chain.

A digest records the hour's first and last event id, its event count and the chain's head hash at
the hour's end, signed with HMAC-SHA256 and chained to the previous digest's signature. Editing a
row and re-hashing every row after it keeps the chain self-consistent, but no longer matches the
signed head hash; deleting a digest breaks the signature chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Min

from controlplane.models import AuditDigest, AuditEvent
from controlplane.services.audit import GENESIS_HASH, lock_chain

PERIOD = timedelta(hours=1)


def signing_key() -> bytes:
    configured = settings.SWITCHBOARD_AUDIT_SIGNING_KEY
    if configured:
        return str(configured).encode()
    # Derived, not SECRET_KEY itself, so a digest signature never doubles as a session signature.
    return hmac.new(
        settings.SECRET_KEY.encode(), b"switchboard audit digest signing key", hashlib.sha256
    ).digest()


@dataclass(frozen=True)
class PeriodSummary:
    """What a digest asserts about one period; computed the same way when writing and verifying."""

    period_start: datetime
    period_end: datetime
    first_event_id: int | None
    last_event_id: int | None
    event_count: int
    head_hash: str


def signed_message(summary: PeriodSummary, previous_signature: str) -> bytes:
    body = {
        "v": 1,
        "period_start": summary.period_start.astimezone(UTC).isoformat(),
        "period_end": summary.period_end.astimezone(UTC).isoformat(),
        "first_event_id": summary.first_event_id,
        "last_event_id": summary.last_event_id,
        "event_count": summary.event_count,
        "head_hash": summary.head_hash,
        "previous_signature": previous_signature,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign(summary: PeriodSummary, previous_signature: str) -> str:
    return hmac.new(signing_key(), signed_message(summary, previous_signature), hashlib.sha256).hexdigest()


def summarise_period(start: datetime, end: datetime) -> PeriodSummary:
    """Count, id range and chain head at the end of [start, end), from the events alone (an empty
    hour's head is the last event before it), so verifying one digest never trusts another."""
    stats = AuditEvent.objects.filter(occurred_at__gte=start, occurred_at__lt=end).aggregate(
        count=Count("id"), first=Min("id"), last=Max("id")
    )
    heads = AuditEvent.objects.values_list("row_hash", flat=True)
    if stats["last"] is not None:
        head = heads.get(pk=stats["last"])
    else:
        head = heads.filter(occurred_at__lt=start).order_by("-occurred_at", "-id").first() or GENESIS_HASH
    return PeriodSummary(start, end, stats["first"], stats["last"], stats["count"], head)


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _database_now() -> datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        now: datetime = cursor.fetchone()[0]
    return now


def _first_open_period(last: AuditDigest | None) -> datetime | None:
    if last is not None:
        return last.period_end
    first_time = AuditEvent.objects.order_by("id").values_list("occurred_at", flat=True).first()
    return floor_hour(first_time) if first_time is not None else None


def audit_digests_close(*, max_periods: int = 24 * 31) -> list[AuditDigest]:
    """Writes a signed digest for every whole hour not yet closed; a rerun in the same hour writes nothing.

    Holds the chain lock, so no event can still arrive for an hour while it is being closed, and two
    runs (beat firing twice, a manual run) serialise: the second sees the first's digests and stops.
    `max_periods` bounds one run's catch-up after a long outage; the next run continues.
    """
    created: list[AuditDigest] = []
    with transaction.atomic():
        lock_chain()
        last = AuditDigest.objects.order_by("-period_end").first()
        start = _first_open_period(last)
        if start is None:
            return created  # an empty log has nothing to close yet
        close_until = floor_hour(_database_now())
        previous_signature = last.signature if last else ""
        while start + PERIOD <= close_until and len(created) < max_periods:
            summary = summarise_period(start, start + PERIOD)
            signature = sign(summary, previous_signature)
            created.append(
                AuditDigest.objects.create(
                    period_start=summary.period_start,
                    period_end=summary.period_end,
                    first_event_id=summary.first_event_id,
                    last_event_id=summary.last_event_id,
                    event_count=summary.event_count,
                    head_hash=summary.head_hash,
                    previous_signature=previous_signature,
                    signature=signature,
                )
            )
            start, previous_signature = summary.period_end, signature
    return created
