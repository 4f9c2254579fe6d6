"""Signed hourly digests: written once per finished hour, chained, and checked by audit_verify."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from controlplane.audit.digest import audit_digests_close, floor_hour
from controlplane.audit.verify import audit_verify
from controlplane.models import AuditDigest, AuditEvent
from controlplane.services.audit import (
    GENESIS_HASH,
    AuditEntry,
    audit_record_many,
    canonical_payload,
    chain_hash,
)
from controlplane.tasks.audit import audit_digest
from tests.controlplane.audit.helpers import ALICE, raw, record, record_at, triggers_disabled


def _db_hour() -> datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return floor_hour(cursor.fetchone()[0])


def _history() -> datetime:
    """Events in three past hours (the middle one empty of the 2nd); returns the first hour's start."""
    start = _db_hour() - timedelta(hours=3)
    record_at(start + timedelta(minutes=5), "thing.create")
    record_at(start + timedelta(minutes=50), "thing.update")
    record_at(start + timedelta(hours=1, minutes=1), "thing.delete")
    return start


@pytest.mark.django_db
def test_digest_closes_each_finished_hour_with_a_signed_chained_record() -> None:
    start = _history()
    created = audit_digests_close()
    assert [d.period_start for d in created] == [start + timedelta(hours=h) for h in range(3)]
    assert [d.event_count for d in created] == [2, 1, 0]
    events = list(AuditEvent.objects.order_by("id"))
    assert created[0].first_event_id == events[0].pk and created[0].last_event_id == events[1].pk
    assert created[0].head_hash == events[1].row_hash and created[1].head_hash == events[2].row_hash
    assert created[2].head_hash == events[2].row_hash  # an empty hour keeps the head it was given
    assert created[0].previous_signature == ""
    assert [d.previous_signature for d in created[1:]] == [d.signature for d in created[:-1]]
    report = audit_verify()
    assert report.ok and report.digests_checked == 3


@pytest.mark.django_db
def test_digest_is_idempotent_within_the_hour() -> None:
    _history()
    assert len(audit_digests_close()) == 3
    assert audit_digests_close() == []
    assert AuditDigest.objects.count() == 3


@pytest.mark.django_db
def test_empty_log_has_nothing_to_close() -> None:
    assert audit_digests_close() == []


@pytest.mark.django_db
def test_no_event_can_be_written_into_a_closed_period() -> None:
    start = _history()
    audit_digests_close()
    with pytest.raises(ValueError, match="closed digest period"):
        record_at(start + timedelta(hours=2, minutes=30), "thing.late")
    # A normal write after the close lands in the open hour, never inside a signed one.
    late = AuditEvent.objects.get(pk=record("thing.after"))
    assert late.occurred_at >= AuditDigest.objects.order_by("period_end").last().period_end  # type: ignore[union-attr]


@pytest.mark.django_db
def test_verify_detects_an_edited_digest_by_its_signature() -> None:
    _history()
    digest = audit_digests_close()[1]
    with triggers_disabled("controlplane_auditdigest"):
        raw("UPDATE controlplane_auditdigest SET event_count = 7 WHERE id = %s", [digest.pk])
    report = audit_verify()
    kinds = {(p.digest_id, p.kind) for p in report.digest_problems}
    assert (digest.pk, "signature_invalid") in kinds and not report.ok


@pytest.mark.django_db
def test_verify_detects_a_digest_signed_with_another_key(settings: object) -> None:
    _history()
    audit_digests_close()
    settings.SWITCHBOARD_AUDIT_SIGNING_KEY = "another-key-entirely"  # type: ignore[attr-defined]
    report = audit_verify()
    assert len([p for p in report.digest_problems if p.kind == "signature_invalid"]) == 3


@pytest.mark.django_db
def test_verify_detects_a_deleted_digest() -> None:
    _history()
    created = audit_digests_close()
    with triggers_disabled("controlplane_auditdigest"):
        raw("DELETE FROM controlplane_auditdigest WHERE id = %s", [created[1].pk])
    report = audit_verify()
    assert [(p.digest_id, p.kind) for p in report.digest_problems] == [(created[2].pk, "digest_chain_broken")]


@pytest.mark.django_db
def test_rewriting_the_whole_chain_is_caught_by_the_signed_head_hash() -> None:
    """An attacker edits a row and re-hashes every row after it: the chain checks out, the digest does not."""
    _history()
    created = audit_digests_close()
    events = list(AuditEvent.objects.order_by("id"))
    with triggers_disabled():
        prev = events[0].row_hash
        for event in events[1:]:
            if event.action == "thing.update":
                event.diff = {"before": None, "after": {"hidden": True}}
            event.prev_hash = prev
            event.row_hash = chain_hash(prev, canonical_payload(event))
            raw(
                "UPDATE controlplane_auditevent SET diff = %s, prev_hash = %s, row_hash = %s WHERE id = %s",
                [json.dumps(event.diff), event.prev_hash, event.row_hash, event.pk],
            )
            prev = event.row_hash
    report = audit_verify()
    assert report.break_count == 0  # the chain alone is fooled
    changed = [p for p in report.digest_problems if p.kind == "events_changed"]
    assert changed and changed[0].digest_id == created[0].pk
    assert "head" in changed[0].detail


@pytest.mark.django_db
def test_verify_detects_an_event_deleted_from_a_closed_period_in_the_digest_count() -> None:
    _history()
    created = audit_digests_close()
    with triggers_disabled():
        raw("DELETE FROM controlplane_auditevent WHERE id = %s", [created[0].first_event_id])
    report = audit_verify()
    assert any(
        p.digest_id == created[0].pk and p.kind == "events_changed" and "signed 2 events" in p.detail
        for p in report.digest_problems
    )


@pytest.mark.django_db(transaction=True)
def test_digest_task_runs_in_a_real_worker_and_a_second_run_writes_nothing(
    celery_worker_process: object,
) -> None:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    audit_record_many(
        [
            AuditEntry(
                actor=ALICE, action="thing.create", team_id=1, occurred_at=start + timedelta(minutes=m)
            )
            for m in (1, 2, 3)
        ]
    )
    first = audit_digest.delay().get(timeout=60)
    second = audit_digest.delay().get(timeout=60)
    assert first["created"] == 2 and second == {"created": 0, "period_ends": []}
    digests = list(AuditDigest.objects.order_by("period_end"))
    assert [d.event_count for d in digests] == [3, 0]
    assert digests[0].previous_signature == "" and digests[0].head_hash != GENESIS_HASH
    assert audit_verify().ok
