"""Reading the audit log: the filters an operator can apply, and who may read which team's events."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, time
from typing import Any

from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_date, parse_datetime

from controlplane.models import AuditEvent, Membership
from controlplane.models.teams import ADMIN_ROLES

ACTOR_TYPES = ("user", "api_key", "system")
FILTER_NAMES = ("since", "until", "actor", "action", "target", "team")


class AuditQueryError(ValueError):
    """A filter value that cannot be used; `field` names the parameter, the message says what to send."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class AuditQuery:
    """Filters over the audit log. `actor` is `user:42`, `api_key:7`, `system` or an actor label;
    `action` is exact or a prefix ending in `*` (`prompt_label.*`); `target` is `type` or `type:id`."""

    since: datetime | None = None
    until: datetime | None = None
    actor: str = ""
    action: str = ""
    target: str = ""
    team_id: int | None = None

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> AuditQuery:
        unknown = sorted(set(params) - set(FILTER_NAMES) - {"format", "cursor", "limit", "offset"})
        if unknown:
            raise AuditQueryError(unknown[0], f"unknown filter; use {', '.join(FILTER_NAMES)}")
        query = cls(
            since=_parse_time("since", params.get("since")),
            until=_parse_time("until", params.get("until")),
            actor=str(params.get("actor") or "").strip(),
            action=str(params.get("action") or "").strip(),
            target=str(params.get("target") or "").strip(),
            team_id=_parse_team(params.get("team")),
        )
        if query.since and query.until and query.since >= query.until:
            raise AuditQueryError("until", "must be later than since")
        return query

    def as_dict(self) -> dict[str, Any]:
        """The filters that are set, JSON-safe (recorded in the audit.export event)."""
        values = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(self).items()}
        return {k: v for k, v in values.items() if v not in (None, "")}


def _parse_time(name: str, raw: Any) -> datetime | None:
    if raw in (None, ""):
        return None
    text = str(raw).strip()
    try:
        moment = parse_datetime(text)
        if moment is None and (day := parse_date(text)) is not None:
            moment = datetime.combine(day, time.min)
    except ValueError:
        moment = None
    if moment is None:
        raise AuditQueryError(
            name, f"{text!r} is not a time; use ISO 8601 such as 2026-01-31T12:00:00Z or 2026-01-31"
        )
    # A time without an offset means UTC: the log is kept in UTC and so are its digests.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _parse_team(raw: Any) -> int | None:
    if raw in (None, ""):
        return None
    try:
        return int(str(raw))
    except ValueError:
        raise AuditQueryError("team", f"{raw!r} is not a team id (an integer)") from None


def _actor_filter(actor: str) -> Q:
    kind, _, ident = actor.partition(":")
    if kind in ACTOR_TYPES and ident:
        return Q(actor_type=kind, actor_id=ident)
    if kind in ACTOR_TYPES and not ident:
        return Q(actor_type=kind)
    return Q(actor_label=actor)


def _action_filter(action: str) -> Q:
    if action.endswith("*"):
        return Q(action__startswith=action[:-1])
    return Q(action=action)


def _target_filter(target: str) -> Q:
    kind, _, ident = target.partition(":")
    return Q(target_type=kind, target_id=ident) if ident else Q(target_type=kind)


def audit_events(query: AuditQuery, *, team_ids: Collection[int] | None) -> QuerySet[AuditEvent]:
    """Events matching `query`, oldest first, limited to `team_ids` (None: every team and none)."""
    events = AuditEvent.objects.order_by("id")
    if team_ids is not None:
        events = events.filter(team_id__in=list(team_ids))
    if query.team_id is not None:
        events = events.filter(team_id=query.team_id)
    if query.since is not None:
        events = events.filter(occurred_at__gte=query.since)
    if query.until is not None:
        events = events.filter(occurred_at__lt=query.until)
    if query.actor:
        events = events.filter(_actor_filter(query.actor))
    if query.action:
        events = events.filter(_action_filter(query.action))
    if query.target:
        events = events.filter(_target_filter(query.target))
    return events


def audit_readable_team_ids(user: Any) -> list[int] | None:
    """Teams whose audit log `user` may read: the ones they own or administer; None means all (superuser).

    API keys read none: a key acts as a developer or viewer at most, and the log records what keys do.
    """
    if getattr(user, "api_key", None) is not None:
        return []
    if getattr(user, "is_superuser", False):
        return None
    if not getattr(user, "is_authenticated", False):
        return []
    return list(Membership.objects.filter(user=user, role__in=ADMIN_ROLES).values_list("team_id", flat=True))
