"""Helpers for the audit tests: write events, and tamper with rows the way a database superuser could."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from controlplane.services.audit import Actor, AuditEntry, audit_record, audit_record_many

ALICE = Actor(type="user", id="7", label="alice", request_id="req-alice-0001", ip="203.0.113.5")
KEY = Actor(type="api_key", id="12", label="sb-abcdefghijkm", request_id="req-key-00002", ip="198.51.100.9")


def record(action: str, *, team_id: int | None = 1, actor: Actor = ALICE, **kwargs: Any) -> int:
    with transaction.atomic():
        return audit_record(actor=actor, action=action, team_id=team_id, **kwargs).pk


def record_at(
    when: datetime, action: str, *, team_id: int | None = 1, actor: Actor = ALICE, **kwargs: Any
) -> None:
    audit_record_many([AuditEntry(actor=actor, action=action, team_id=team_id, occurred_at=when, **kwargs)])


@contextmanager
def triggers_disabled(table: str = "controlplane_auditevent") -> Iterator[None]:
    """What an attacker with the table owner's rights does; the trigger is back on afterwards."""
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def raw(sql: str, params: list[Any] | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
