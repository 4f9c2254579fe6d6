"""Writing the audit chain. Every control-plane service calls `audit_record` inside its own
`transaction.atomic`, so the change and its audit row commit together or not at all."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Model

from controlplane.models import AuditEvent

GENESIS_HASH = "0" * 64
REDACTED = "[redacted]"
# Field names whose values never reach the audit log, at any depth of a diff.
# Matched against the words of a key (split on "_", "-", "."). These mark a secret anywhere in
# the name (`client_secret`, `credentials_encrypted`)...
_SECRET_WORDS = frozenset(
    {"secret", "password", "passwd", "credential", "credentials", "authorization", "apikey"}
)
# ...these only as the last word, so `access_token` and `key_digest` are hidden while
# `first_token_timeout_s`, `max_new_tokens` and `tokenizer` stay readable.
_SECRET_LAST_WORDS = frozenset({"token", "digest", "key"})
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


def _is_secret_key(name: str) -> bool:
    lowered = name.lower()
    if lowered.startswith("has_"):
        return False
    words = [word for word in re.split(r"[_\-.\s]+", lowered) if word]
    return bool(words) and (words[-1] in _SECRET_LAST_WORDS or not _SECRET_WORDS.isdisjoint(words))


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: (REDACTED if _is_secret_key(str(key)) else redact(item)) for key, item in value.items()}
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
        "diff": _canonical_json(event.diff),
        "outcome": event.outcome,
        "request_id": event.request_id,
        "ip": event.ip,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical_json(value: Any) -> Any:
    """Numbers as PostgreSQL's jsonb gives them back: an integral float (2.0, 1e16) returns as an
    integer, so the hash written and the hash re-computed from the stored row must agree."""
    if isinstance(value, float) and value.is_integer():
        return int(Decimal(repr(value)))
    if isinstance(value, dict):
        return {key: _canonical_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical_json(item) for item in value]
    return value


def chain_hash(prev_hash: str, payload: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{payload}".encode()).hexdigest()


@dataclass(frozen=True)
class ChainHead:
    """The chain's state under the lock: the hash to link to, the earliest time a new event may
    carry (the head's time or the end of the last signed period), and the database clock."""

    row_hash: str
    earliest: datetime | None
    now: datetime

    @property
    def next_time(self) -> datetime:
        return max(self.now, self.earliest) if self.earliest else self.now


# One round trip: the head row, the newest digest's end and the database clock. Event times come
# from the database clock (one clock for every web process and worker) and never go behind the head
# or into a period a signed digest has already closed, so periods hold contiguous runs of ids.
_HEAD_SQL = """
SELECT (SELECT row_hash FROM controlplane_auditevent ORDER BY id DESC LIMIT 1),
       (SELECT occurred_at FROM controlplane_auditevent ORDER BY id DESC LIMIT 1),
       (SELECT max(period_end) FROM controlplane_auditdigest),
       clock_timestamp()
"""


def lock_chain() -> ChainHead:
    """Takes the chain lock until the transaction ends; returns the head to append after."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])
        cursor.execute(_HEAD_SQL)
        head_hash, head_time, sealed_until, db_now = cursor.fetchone()
    bounds = [t for t in (head_time, sealed_until) if t is not None]
    return ChainHead(row_hash=head_hash or GENESIS_HASH, earliest=max(bounds) if bounds else None, now=db_now)


def lock_chain_head() -> str:
    """Takes the chain lock for this transaction and returns the current head hash."""
    return lock_chain().row_hash


def _clean_ip(ip: str | None) -> str | None:
    """The address as PostgreSQL's inet returns it (hashing must see the stored form); junk → None,
    because an audit write must not fail over a malformed REMOTE_ADDR."""
    if not ip or "%" in ip:  # inet has no IPv6 zone ids
        return None
    try:
        ipaddress.ip_address(ip)
        return str(AuditEvent._meta.get_field("ip").get_prep_value(ip))
    except (ValueError, ValidationError):
        return None


@dataclass(frozen=True)
class AuditEntry:
    """One event for `audit_record_many`: the same fields `audit_record` takes."""

    actor: Actor
    action: str
    team_id: int | None
    target_type: str = ""
    target_id: str = ""
    target_label: str = ""
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    outcome: str = "success"
    # Only for backfills (importing history); must not go behind the chain head or a closed period.
    occurred_at: datetime | None = None


def _build_event(entry: AuditEntry, occurred_at: datetime) -> AuditEvent:
    return AuditEvent(
        occurred_at=occurred_at,
        team_id=entry.team_id,
        actor_type=entry.actor.type,
        actor_id=entry.actor.id,
        actor_label=entry.actor.label[:200],
        action=entry.action,
        target_type=entry.target_type,
        target_id=entry.target_id,
        target_label=entry.target_label[:200],
        diff=_jsonable(redact(diff(entry.before, entry.after))),
        outcome=entry.outcome,
        request_id=entry.actor.request_id,
        ip=_clean_ip(entry.actor.ip),
    )


def _link(event: AuditEvent, prev_hash: str) -> str:
    event.prev_hash = prev_hash
    event.row_hash = chain_hash(prev_hash, canonical_payload(event))
    return event.row_hash


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
    entry = AuditEntry(
        actor=actor,
        action=action,
        team_id=team_id,
        target_type=target_type,
        target_id=target_id,
        target_label=target_label,
        before=before,
        after=after,
        outcome=outcome,
    )
    head = lock_chain()
    event = _build_event(entry, head.next_time)
    _link(event, head.row_hash)
    event.save(force_insert=True)
    return event


def _entry_times(entries: list[AuditEntry], head: ChainHead) -> list[datetime]:
    times: list[datetime] = []
    floor = head.earliest
    for index, entry in enumerate(entries):
        when = entry.occurred_at or (max(head.now, floor) if floor else head.now)
        if floor is not None and when < floor:
            raise ValueError(
                f"entry {index}: occurred_at {when.isoformat()} is before {floor.isoformat()} "
                "(the chain head or a closed digest period); backfill in time order into an open period"
            )
        if when > head.now:
            raise ValueError(f"entry {index}: occurred_at {when.isoformat()} is in the future")
        times.append(when)
        floor = when
    return times


def audit_record_many(events: list[AuditEntry], *, batch_size: int = 5000) -> int:
    """Appends many events under one chain lock: hashes computed here, rows written by bulk_create.

    Same canonical payload and chain as `audit_record`; for imports and benchmarks, where one
    lock and one INSERT per batch instead of per row is the difference between minutes and hours.
    Returns the number of events written.
    """
    if not events:
        return 0
    with transaction.atomic():
        head = lock_chain()
        times = _entry_times(events, head)
        prev_hash = head.row_hash
        for start in range(0, len(events), batch_size):
            batch = [
                _build_event(entry, when)
                for entry, when in zip(
                    events[start : start + batch_size], times[start : start + batch_size], strict=True
                )
            ]
            for event in batch:
                prev_hash = _link(event, prev_hash)
            # One multi-row INSERT per batch: PostgreSQL draws the ids in VALUES order, which is
            # the chain order audit_verify walks.
            AuditEvent.objects.bulk_create(batch)
    return len(events)


def audit_export_record(
    *, actor: Actor, fmt: str, filters: dict[str, Any], team_ids: list[int] | None
) -> list[AuditEvent]:
    """Records an export of the audit log before it streams: one `audit.export` event per team in
    scope (so each team's admins see it in their own log), or one without a team for an unscoped export."""
    scopes: list[int | None] = [None] if not team_ids else list(team_ids)
    with transaction.atomic():
        return [
            audit_record(
                actor=actor,
                action="audit.export",
                team_id=team_id,
                target_type="audit_log",
                target_label="audit log",
                after={"format": fmt, "filters": filters},
            )
            for team_id in scopes
        ]
