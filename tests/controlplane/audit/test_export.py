"""Export: OCSF JSONL and CSV contents, filters, streaming, and the export's own audit event."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from controlplane.audit.digest import floor_hour
from controlplane.models import AuditEvent
from controlplane.services.audit import Actor
from tests.controlplane.audit.helpers import ALICE, KEY, record, record_at


def _export(tmp_path: Path, *args: str) -> str:
    out = tmp_path / "export.out"
    call_command("audit_export", *args, "--output", str(out), stderr=io.StringIO())
    return out.read_text()


def _jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def log() -> dict[str, int]:
    return {
        "create": record(
            "prompt.create",
            target_type="prompts.prompt",
            target_id="5",
            target_label="greeting",
            after={"name": "greeting"},
        ),
        "move": record(
            "prompt_label.move",
            actor=KEY,
            team_id=2,
            target_type="prompts.promptlabel",
            target_id="9",
            before={"version": 1},
            after={"version": 2},
        ),
        "delete": record(
            "backend.delete", team_id=1, target_type="controlplane.backend", target_id="3", outcome="failure"
        ),
        "system": record("budget.rollover", team_id=None, actor=Actor.system("beat")),
    }


@pytest.mark.django_db
def test_jsonl_export_carries_ocsf_api_activity_fields(tmp_path: Path, log: dict[str, int]) -> None:
    records = {r["metadata"]["sequence"]: r for r in _jsonl(_export(tmp_path, "--format", "jsonl"))}
    create, move, delete = records[log["create"]], records[log["move"]], records[log["delete"]]
    assert create["class_uid"] == 6003 and create["category_uid"] == 6
    assert (create["activity_id"], move["activity_id"], delete["activity_id"]) == (1, 3, 4)
    assert create["type_uid"] == 600301
    assert create["actor"]["user"] == {"uid": "7", "name": "alice", "type": "User", "type_id": 1}
    assert move["actor"]["user"]["credential_uid"] == "12"
    assert create["api"]["operation"] == "prompt.create"
    assert create["api"]["request"]["uid"] == "req-alice-0001"
    assert create["metadata"]["correlation_uid"] == "req-alice-0001"
    assert create["src_endpoint"] == {"ip": "203.0.113.5"}
    assert create["resources"] == [{"uid": "5", "name": "greeting", "type": "prompts.prompt"}]
    assert create["status_id"] == 1 and delete["status_id"] == 2
    event = AuditEvent.objects.get(pk=log["create"])
    assert create["time"] == int(event.occurred_at.timestamp() * 1000)
    assert move["unmapped"]["diff"] == {"before": {"version": 1}, "after": {"version": 2}}
    assert create["unmapped"]["row_hash"] == event.row_hash


@pytest.mark.django_db
def test_csv_export_has_a_header_and_one_row_per_event(tmp_path: Path, log: dict[str, int]) -> None:
    rows = list(csv.DictReader(io.StringIO(_export(tmp_path, "--format", "csv"))))
    by_id = {int(r["event_id"]): r for r in rows}
    assert set(log.values()) <= set(by_id)
    move = by_id[log["move"]]
    assert move["api_operation"] == "prompt_label.move" and move["activity_id"] == "3"
    assert move["actor_type"] == "api_key" and move["resource_uid"] == "9" and move["team_id"] == "2"
    assert json.loads(move["diff"]) == {"after": {"version": 2}, "before": {"version": 1}}
    assert by_id[log["system"]]["team_id"] == "" and by_id[log["delete"]]["status_id"] == "2"


@pytest.mark.django_db
def test_csv_export_defuses_spreadsheet_formulas(tmp_path: Path) -> None:
    event_id = record("thing.create", actor=Actor(type="user", id="1", label='=HYPERLINK("x")'))
    rows = {int(r["event_id"]): r for r in csv.DictReader(io.StringIO(_export(tmp_path, "--format", "csv")))}
    assert rows[event_id]["actor_name"] == '\'=HYPERLINK("x")'


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--actor", "api_key:12"), {"move"}),
        (("--actor", "alice"), {"create", "delete"}),
        (("--actor", "system"), {"system"}),
        (("--action", "prompt*"), {"create", "move"}),
        (("--action", "backend.delete"), {"delete"}),
        (("--target", "prompts.prompt:5"), {"create"}),
        (("--target", "controlplane.backend"), {"delete"}),
        (("--team", "1", "--action", "prompt.create"), {"create"}),
    ],
)
def test_export_filters_by_actor_action_target_and_team(
    tmp_path: Path, log: dict[str, int], args: tuple[str, ...], expected: set[str]
) -> None:
    ids = {r["metadata"]["sequence"] for r in _jsonl(_export(tmp_path, *args))}
    # The export's own audit.export event is written first and may match (e.g. --actor system).
    ids -= set(AuditEvent.objects.filter(action="audit.export").values_list("id", flat=True))
    assert ids == {log[name] for name in expected}


@pytest.mark.django_db
def test_export_filters_by_time_range(tmp_path: Path) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        hour = floor_hour(cursor.fetchone()[0]) - timedelta(hours=3)
    for minutes, action in ((0, "a.create"), (60, "b.create"), (120, "c.create")):
        record_at(hour + timedelta(minutes=minutes), action)
    since, until = (hour + timedelta(minutes=30)).isoformat(), (hour + timedelta(minutes=90)).isoformat()
    actions = [r["api"]["operation"] for r in _jsonl(_export(tmp_path, "--since", since, "--until", until))]
    assert actions == ["b.create"]


@pytest.mark.django_db
def test_export_is_itself_audited_with_its_filters(tmp_path: Path, log: dict[str, int]) -> None:
    _export(tmp_path, "--format", "csv", "--action", "prompt*", "--team", "1")
    event = AuditEvent.objects.get(action="audit.export")
    assert event.actor_type == "system" and "audit_export" in event.actor_label
    assert event.team_id == 1
    assert event.diff["after"] == {"format": "csv", "filters": {"action": "prompt*", "team_id": 1}}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "yesterday"), "--since: 'yesterday' is not a time; use ISO 8601"),
        (("--since", "2026-02-01", "--until", "2026-01-01"), "--until: must be later than since"),
        (("--team", "acme"), "--team: 'acme' is not a team id"),
    ],
)
def test_export_rejects_bad_filters_with_a_message_and_writes_nothing(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        _export(tmp_path, *args)
    assert not AuditEvent.objects.filter(action="audit.export").exists()


@pytest.mark.django_db
def test_export_streams_in_blocks_without_reading_everything_first() -> None:
    from controlplane.audit.export import ExportStream
    from controlplane.audit.query import AuditQuery, audit_events
    from controlplane.services.audit import AuditEntry, audit_record_many

    audit_record_many(
        [
            AuditEntry(actor=ALICE, action="bulk.create", team_id=1, after={"i": i, "pad": "x" * 200})
            for i in range(400)
        ]
    )
    stream = ExportStream(audit_events(AuditQuery(), team_ids=None), "jsonl", chunk_size=50, block_bytes=8192)
    blocks = iter(stream)
    first = next(blocks)
    # One block out means only the rows for that block were read, not the whole log.
    assert len(first) >= 8192 and stream.rows < 400
    rest = b"".join(blocks)
    assert stream.rows == 400 and (first + rest).count(b"\n") == 400
