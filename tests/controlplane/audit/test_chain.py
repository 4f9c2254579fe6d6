"""The hash chain: append-only at the database, verified row by row, secrets kept out of diffs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, transaction
from django.utils import timezone

from controlplane.audit.verify import audit_verify
from controlplane.models import AuditDigest, AuditEvent
from controlplane.services.audit import (
    GENESIS_HASH,
    Actor,
    AuditEntry,
    audit_record,
    audit_record_many,
    canonical_payload,
    chain_hash,
)
from tests.conftest import REPO_ROOT, subprocess_env
from tests.controlplane.audit.helpers import ALICE, KEY, raw, record, triggers_disabled


def _verify() -> tuple[str, CommandError | None]:
    out = io.StringIO()
    try:
        call_command("audit_verify", "--quiet", stdout=out, stderr=io.StringIO())
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


@pytest.mark.django_db
def test_each_row_links_to_the_previous_row_hash() -> None:
    ids = [record(f"thing.create{i}") for i in range(3)]
    rows = list(AuditEvent.objects.filter(pk__in=ids).order_by("id"))
    assert rows[0].prev_hash == GENESIS_HASH
    assert [r.prev_hash for r in rows[1:]] == [r.row_hash for r in rows[:-1]]
    for row in rows:
        assert row.row_hash == chain_hash(row.prev_hash, canonical_payload(row))
    assert rows[1].actor_type == "user" and rows[1].actor_label == "alice"
    assert rows[1].request_id == "req-alice-0001" and rows[1].ip == "203.0.113.5"


@pytest.mark.django_db
def test_trigger_rejects_update_and_delete_by_raw_sql() -> None:
    event_id = record("thing.create")
    for sql in (
        "UPDATE controlplane_auditevent SET action = 'forged' WHERE id = %s",
        "DELETE FROM controlplane_auditevent WHERE id = %s",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            raw(sql, [event_id])
    assert AuditEvent.objects.get(pk=event_id).action == "thing.create"


@pytest.mark.django_db
def test_trigger_rejects_update_and_delete_through_the_orm() -> None:
    event = AuditEvent.objects.get(pk=record("thing.create"))
    event.action = "forged"
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        event.save()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(action="forged")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        event.delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.filter(pk=event.pk, action="thing.create").exists()


@pytest.mark.django_db
def test_trigger_protects_digests_too() -> None:
    digest = AuditDigest.objects.create(
        period_start=timezone.now() - timedelta(hours=1),
        period_end=timezone.now(),
        event_count=0,
        head_hash=GENESIS_HASH,
        signature="0" * 64,
    )
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditDigest.objects.filter(pk=digest.pk).update(event_count=5)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        digest.delete()


@pytest.mark.django_db
def test_audit_record_refuses_to_run_outside_a_transaction() -> None:
    # Under pytest-django the test itself is in a transaction; leave it to check the guard.
    from django.db import connection

    atomic = connection.in_atomic_block
    connection.in_atomic_block = False
    try:
        with pytest.raises(RuntimeError, match=r"transaction\.atomic"):
            audit_record(actor=ALICE, action="thing.create", team_id=1)
    finally:
        connection.in_atomic_block = atomic


@pytest.mark.django_db
def test_verify_passes_on_a_clean_chain_of_single_and_bulk_writes() -> None:
    record("thing.create", before=None, after={"n": 2.0, "big": 1e16, "price": "0.50"})
    record("thing.update", actor=Actor(type="user", id="3", label="v6", ip="2001:DB8::1"))
    audit_record_many(
        [AuditEntry(actor=KEY, action="bulk.create", team_id=2, after={"i": i}) for i in range(250)],
        batch_size=100,
    )
    record("thing.delete", team_id=None, actor=Actor.system())
    out, error = _verify()
    assert error is None, out
    report = audit_verify(chunk_size=7)  # several server-side cursor fetches
    assert report.ok and report.events_checked == 253


@pytest.mark.django_db
def test_verify_names_the_edited_row_as_row_hash_mismatch() -> None:
    ids = [record(f"thing.step{i}", after={"step": i}) for i in range(5)]
    with triggers_disabled():
        raw(
            "UPDATE controlplane_auditevent SET diff = %s WHERE id = %s",
            [json.dumps({"before": None, "after": {"step": 99}}), ids[2]],
        )
    out, error = _verify()
    assert error is not None and error.returncode == 1
    assert f"FIRST BROKEN LINK: event #{ids[2]}: row_hash_mismatch" in out
    report = audit_verify()
    assert report.break_count == 1 and report.first_break is not None
    assert report.first_break.event_id == ids[2]


@pytest.mark.django_db
def test_verify_names_the_row_after_a_deleted_row_as_prev_hash_mismatch() -> None:
    ids = [record(f"thing.step{i}") for i in range(5)]
    with triggers_disabled():
        raw("DELETE FROM controlplane_auditevent WHERE id = %s", [ids[2]])
    out, error = _verify()
    assert error is not None and error.returncode == 1
    assert f"FIRST BROKEN LINK: event #{ids[3]}: prev_hash_mismatch" in out
    assert "not in the log" in out and f"expected #{ids[1]}" in out


@pytest.mark.django_db
def test_verify_reports_an_inserted_row_as_prev_hash_mismatch_naming_the_real_link() -> None:
    ids = [record(f"thing.step{i}") for i in range(3)]
    first = AuditEvent.objects.get(pk=ids[0])
    forged = AuditEvent(
        occurred_at=first.occurred_at,
        team_id=1,
        actor_type="user",
        actor_id="7",
        actor_label="alice",
        action="thing.forged",
        diff={},
        prev_hash=first.row_hash,
    )
    forged.row_hash = chain_hash(forged.prev_hash, canonical_payload(forged))
    forged.save(force_insert=True)  # lands after the last row, claiming to follow the first
    report = audit_verify()
    assert report.first_break is not None and report.first_break.event_id == forged.pk
    assert report.first_break.kind == "prev_hash_mismatch"
    assert f"links to #{ids[0]}, not to #{ids[2]}" in report.first_break.detail


@pytest.mark.django_db(transaction=True)
def test_audit_verify_command_exits_non_zero_when_the_chain_is_broken() -> None:
    ids = [record(f"thing.step{i}") for i in range(3)]
    ok = subprocess.run(
        [sys.executable, "manage.py", "audit_verify"],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "OK: 3 events chained" in ok.stdout
    with triggers_disabled():
        raw("UPDATE controlplane_auditevent SET actor_label = 'mallory' WHERE id = %s", [ids[1]])
    broken = subprocess.run(
        [sys.executable, "manage.py", "audit_verify"],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert broken.returncode == 1
    assert f"event #{ids[1]}: row_hash_mismatch" in broken.stdout


@pytest.mark.django_db
def test_secrets_are_redacted_in_diffs_at_any_depth() -> None:
    event_id = record(
        "backend.update",
        before={"name": "a", "credentials": "sk-live-old", "headers": {"Authorization": "Bearer x"}},
        after={
            "name": "b",
            "credentials": "sk-live-new",
            "nested": [{"api_token": "tok-123"}],
            "headers": {"Authorization": "Bearer y"},
            "password": "hunter2",
        },
    )
    stored = json.dumps(AuditEvent.objects.get(pk=event_id).diff)
    for secret in ("sk-live-old", "sk-live-new", "tok-123", "Bearer x", "Bearer y", "hunter2"):
        assert secret not in stored
    diff = AuditEvent.objects.get(pk=event_id).diff
    assert diff["after"]["credentials"] == "[redacted]" and diff["after"]["name"] == "b"
    assert diff["after"]["nested"] == [{"api_token": "[redacted]"}]


@pytest.mark.django_db
def test_api_key_secret_never_reaches_the_audit_log(team: object) -> None:
    from controlplane.services.keys import api_key_create

    key, secret = api_key_create(team=team, name="ci", scopes=["management:read"], actor=ALICE)  # type: ignore[arg-type]
    rows = AuditEvent.objects.filter(action="api_key.create", target_id=str(key.pk))
    assert rows.count() == 1
    assert secret not in json.dumps(rows.get().diff)
    assert key.digest not in json.dumps(rows.get().diff)


@pytest.mark.django_db
def test_bulk_write_refuses_entries_before_the_chain_head_and_writes_nothing() -> None:
    record("thing.create")
    count = AuditEvent.objects.count()
    past = timezone.now() - timedelta(hours=5)
    with pytest.raises(ValueError, match="entry 1: occurred_at"):
        audit_record_many(
            [
                AuditEntry(actor=ALICE, action="ok", team_id=1),
                AuditEntry(actor=ALICE, action="late", team_id=1, occurred_at=past),
            ]
        )
    assert AuditEvent.objects.count() == count


@pytest.mark.django_db
def test_a_malformed_client_address_is_dropped_not_a_failed_write() -> None:
    for junk in ("not-an-ip", "fe80::1%eth0", "999.1.1.1"):
        event = AuditEvent.objects.get(
            pk=record("thing.create", actor=Actor(type="user", id="1", label="x", ip=junk))
        )
        assert event.ip is None
    assert audit_verify().ok
