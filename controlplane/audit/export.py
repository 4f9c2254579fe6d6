"""Audit export: JSONL (one OCSF API Activity record per line) or CSV, streamed.

Rows come from a server-side cursor in chunks and leave as ~64 KiB byte blocks, so memory stays
flat whatever the size of the log. `manage.py audit_export` and the API's export views share
`ExportStream`; the caller records the `audit.export` event before streaming starts.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Generator
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import QuerySet

from controlplane.models import AuditEvent

FORMATS = ("jsonl", "csv")
CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
_FIELDS = (
    "id",
    "occurred_at",
    "team_id",
    "actor_type",
    "actor_id",
    "actor_label",
    "action",
    "target_type",
    "target_id",
    "target_label",
    "diff",
    "outcome",
    "request_id",
    "ip",
    "prev_hash",
    "row_hash",
)

# OCSF API Activity (class 6003): activity from the action's verb (`prompt_label.move` → move).
_ACTIVITY_BY_VERB = {
    **dict.fromkeys(("create", "add", "register", "import"), (1, "Create")),
    **dict.fromkeys(("read", "list", "view", "export", "render", "verify"), (2, "Read")),
    **dict.fromkeys(
        (
            "update",
            "move",
            "change_role",
            "revoke",
            "rotate",
            "promote",
            "rollback",
            "set",
            "enable",
            "disable",
            "pause",
            "resume",
        ),
        (3, "Update"),
    ),
    **dict.fromkeys(("delete", "remove", "purge"), (4, "Delete")),
}
_USER_TYPES = {"user": (1, "User"), "system": (3, "System"), "api_key": (99, "Other")}
CSV_COLUMNS = (
    "event_id",
    "time",
    "activity_id",
    "activity_name",
    "status_id",
    "actor_type",
    "actor_uid",
    "actor_name",
    "api_operation",
    "src_ip",
    "resource_type",
    "resource_uid",
    "resource_name",
    "request_id",
    "team_id",
    "diff",
    "prev_hash",
    "row_hash",
)
# Spreadsheet programs run a cell that starts with one of these as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def activity_of(action: str) -> tuple[int, str]:
    return _ACTIVITY_BY_VERB.get(action.rsplit(".", 1)[-1], (99, "Other"))


def _actor(row: dict[str, Any]) -> dict[str, Any]:
    type_id, type_name = _USER_TYPES.get(row["actor_type"], (0, "Unknown"))
    user: dict[str, Any] = {
        "uid": row["actor_id"] or row["actor_type"],
        "name": row["actor_label"],
        "type": type_name,
        "type_id": type_id,
    }
    if row["actor_type"] == "api_key":
        user["credential_uid"] = row["actor_id"]
    return {"user": user}


def ocsf_record(row: dict[str, Any]) -> dict[str, Any]:
    """One event as an OCSF API Activity record; what OCSF has no field for goes under `unmapped`."""
    activity_id, activity_name = activity_of(row["action"])
    occurred: datetime = row["occurred_at"]
    success = row["outcome"] == "success"
    record: dict[str, Any] = {
        "class_uid": 6003,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": 600300 + activity_id,
        "severity_id": 1,
        "time": int(occurred.timestamp() * 1000),
        "time_dt": occurred.isoformat(),
        "status_id": 1 if success else 2,
        "status": "Success" if success else "Failure",
        "actor": _actor(row),
        "api": {
            "operation": row["action"],
            "service": {"name": "switchboard"},
            "request": {"uid": row["request_id"]},
        },
        "resources": (
            [{"uid": row["target_id"], "name": row["target_label"], "type": row["target_type"]}]
            if row["target_type"]
            else []
        ),
        "metadata": {
            "uid": str(row["id"]),
            "correlation_uid": row["request_id"],
            "sequence": row["id"],
            "version": "1.1.0",
            "log_name": "switchboard.audit",
            "product": {"name": "Switchboard", "vendor_name": "Switchboard"},
        },
        "unmapped": {
            "team_id": row["team_id"],
            "diff": row["diff"],
            "outcome": row["outcome"],
            "prev_hash": row["prev_hash"],
            "row_hash": row["row_hash"],
        },
    }
    if row["ip"]:
        record["src_endpoint"] = {"ip": row["ip"]}
    return record


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def csv_row(row: dict[str, Any]) -> list[Any]:
    activity_id, activity_name = activity_of(row["action"])
    values = (
        row["id"],
        row["occurred_at"].isoformat(),
        activity_id,
        activity_name,
        1 if row["outcome"] == "success" else 2,
        row["actor_type"],
        row["actor_id"],
        row["actor_label"],
        row["action"],
        row["ip"] or "",
        row["target_type"],
        row["target_id"],
        row["target_label"],
        row["request_id"],
        "" if row["team_id"] is None else row["team_id"],
        json.dumps(row["diff"], sort_keys=True, ensure_ascii=False),
        row["prev_hash"],
        row["row_hash"],
    )
    return [_cell(value) for value in values]


def _next_block(blocks: Generator[bytes, None, None]) -> bytes | None:
    return next(blocks, None)


class ExportStream:
    """Iterates the export as byte blocks; `rows` counts what has been written so far."""

    def __init__(
        self, events: QuerySet[AuditEvent], fmt: str, *, chunk_size: int = 2000, block_bytes: int = 64 * 1024
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format: use one of {', '.join(FORMATS)}")
        self.events = events
        self.fmt = fmt
        self.chunk_size = chunk_size
        self.block_bytes = block_bytes
        self.rows = 0

    def __iter__(self) -> Generator[bytes, None, None]:
        buffer = io.StringIO()
        writer = csv.writer(buffer) if self.fmt == "csv" else None
        if writer is not None:
            writer.writerow(CSV_COLUMNS)
        for row in self.events.values(*_FIELDS).iterator(chunk_size=self.chunk_size):
            if writer is not None:
                writer.writerow(csv_row(row))
            else:
                buffer.write(json.dumps(ocsf_record(row), ensure_ascii=False, separators=(",", ":")))
                buffer.write("\n")
            self.rows += 1
            if buffer.tell() >= self.block_bytes:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
        if buffer.tell():
            yield buffer.getvalue().encode()

    async def aiter(self) -> AsyncIterator[bytes]:
        """For ASGI: Django would otherwise read a sync iterator into a list before sending it.
        Each block is produced in the request's own sync thread, where its cursor's connection lives."""
        blocks = iter(self)
        produce = sync_to_async(_next_block, thread_sensitive=True)
        try:
            while (block := await produce(blocks)) is not None:
                yield block
        finally:
            await sync_to_async(blocks.close, thread_sensitive=True)()
