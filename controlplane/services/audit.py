"""Writing the audit chain. Every control-plane service calls `audit_record` inside its own
`transaction.atomic`, so the change and its audit row commit together or not at all."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Model
from django.utils import timezone

from controlplane.models import AuditEvent

GENESIS_HASH = "0" * 64
REDACTED = "[redacted]"
# Field names whose values never reach the audit log, at any depth of a diff.
_SECRET_MARKERS = ("secret", "password", "credential", "token", "digest", "api_key_value", "authorization")
# One chain for the whole installation; appenders serialise on this advisory lock until commit.
_CHAIN_LOCK_KEY = 0x5B_A0_D1_7C


@dataclass(frozen=True)
class Actor:
    """Who did it, and from where. Interfaces build one and pass it to every service."""

    type: str  # user | api_key | system
    id: str = ""
    label: str = ""
    request_id: str = ""
    ip: str | None = None

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(type="system", label=label)

    @classmethod
    def for_user(cls, user: Any, *, request_id: str = "", ip: str | None = None) -> Actor:
        return cls(type="user", id=str(user.pk), label=user.get_username(), request_id=request_id, ip=ip)


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: (REDACTED if any(marker in str(key).lower() for marker in _SECRET_MARKERS) else redact(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Model):
        return value.pk
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return value


def snapshot(instance: Model, fields: list[str]) -> dict[str, Any]:
    """The audited view of a row: the named fields, JSON-safe, secrets redacted."""
    return redact({name: _jsonable(getattr(instance, name)) for name in fields})


def diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """Only what changed, so the log reads as a list of changes rather than full copies."""
    if before is None or after is None:
        return {"before": before, "after": after}
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return {"before": {k: before.get(k) for k in changed}, "after": {k: after.get(k) for k in changed}}


def canonical_payload(event: AuditEvent) -> str:
    """The bytes the row hash covers. Stable across Python and PostgreSQL round trips."""
    body = {
        "occurred_at": event.occurred_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "team_id": event.team_id,
        "actor": [event.actor_type, event.actor_id, event.actor_label],
        "action": event.action,
        "target": [event.target_type, event.target_id, event.target_label],
        "diff": event.diff,
        "outcome": event.outcome,
        "request_id": event.request_id,
        "ip": event.ip,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, payload: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{payload}".encode()).hexdigest()


def lock_chain_head() -> str:
    """Takes the chain lock for this transaction and returns the current head hash."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])
        cursor.execute("SELECT row_hash FROM controlplane_auditevent ORDER BY id DESC LIMIT 1")
        row = cursor.fetchone()
    return row[0] if row else GENESIS_HASH


def audit_record(
    *,
    actor: Actor,
    action: str,
    team_id: int | None,
    target: Model | None = None,
    target_type: str = "",
    target_id: str = "",
    target_label: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    outcome: str = "success",
) -> AuditEvent:
    """Appends one event to the chain. Must run inside the caller's transaction."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record must run inside the service's transaction.atomic block")
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or str(target.pk)
        target_label = target_label or str(target)[:200]
    event = AuditEvent(
        occurred_at=timezone.now(),
        team_id=team_id,
        actor_type=actor.type,
        actor_id=actor.id,
        actor_label=actor.label[:200],
        action=action,
        target_type=target_type,
        target_id=target_id,
        target_label=target_label[:200],
        diff=_jsonable(redact(diff(before, after))),
        outcome=outcome,
        request_id=actor.request_id,
        ip=actor.ip,
    )
    event.prev_hash = lock_chain_head()
    event.row_hash = chain_hash(event.prev_hash, canonical_payload(event))
    event.save(force_insert=True)
    return event
