"""Endpoints: the stable names clients call, their traffic policy and fallback chain.

Each change is one audited service call that bumps `config_version` and, after commit, tells
every web process to drop its cached route (`publish_after_commit("endpoint", pk)`).

Not here yet: at most one active experiment or rollout per endpoint arrives with the experiments
issue, as its own model pointing at the endpoint; these calls will then refuse to switch traffic
while a rollout owns it. No placeholder fields exist for it on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from controlplane.models import Endpoint, EndpointFallback, Release, Team, TrafficSplit
from controlplane.selectors import endpoint_fallback_ids, endpoint_policy
from controlplane.services.audit import Actor, audit_record
from controlplane.services.common import unique_as_field_error
from controlplane.services.events import publish_after_commit

# What clients put in `model`: OpenAI-style ids such as "support-bot", "org/model:v2".
ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}$")
MAX_FALLBACKS = 8
_UNIQUE_NAME = {"endpoint_unique_team_name": ("name", "this team already has an endpoint with this name")}


@dataclass(frozen=True)
class TrafficEntry:
    release: Release
    weight: int


def _validate_policy(team_id: int, entries: Sequence[TrafficEntry]) -> list[TrafficEntry]:
    """Weights are whole numbers 0-100 summing to exactly 100; zero-weight entries are dropped."""
    if not entries:
        raise ValidationError({"traffic": "give at least one release with its weight (weights sum to 100)"})
    for entry in entries:
        if (
            isinstance(entry.weight, bool)
            or not isinstance(entry.weight, int)
            or not 0 <= entry.weight <= 100
        ):
            raise ValidationError(
                {"traffic": f"weight of {entry.release.name!r} must be a whole number 0-100"}
            )
        if entry.release.team_id != team_id:
            raise ValidationError({"traffic": f"release {entry.release.name!r} belongs to another team"})
    release_ids = [entry.release.pk for entry in entries]
    if len(set(release_ids)) != len(release_ids):
        raise ValidationError({"traffic": "list each release once"})
    total = sum(entry.weight for entry in entries)
    if total != 100:
        raise ValidationError({"traffic": f"weights must sum to 100; these sum to {total}"})
    return [entry for entry in entries if entry.weight > 0]


def _validate_fallbacks(team_id: int, releases: Sequence[Release]) -> list[Release]:
    if len(releases) > MAX_FALLBACKS:
        raise ValidationError({"fallbacks": f"at most {MAX_FALLBACKS} fallback releases"})
    if len({r.pk for r in releases}) != len(releases):
        raise ValidationError({"fallbacks": "list each release once"})
    foreign = [r.name for r in releases if r.team_id != team_id]
    if foreign:
        raise ValidationError({"fallbacks": f"releases {foreign} belong to another team"})
    return list(releases)


def _write_policy(endpoint: Endpoint, policy: Sequence[TrafficEntry]) -> None:
    TrafficSplit.objects.filter(endpoint=endpoint).delete()
    TrafficSplit.objects.bulk_create(
        TrafficSplit(endpoint=endpoint, release=entry.release, weight=entry.weight) for entry in policy
    )


def _write_fallbacks(endpoint: Endpoint, releases: Sequence[Release]) -> None:
    EndpointFallback.objects.filter(endpoint=endpoint).delete()
    EndpointFallback.objects.bulk_create(
        EndpointFallback(endpoint=endpoint, release=release, position=i) for i, release in enumerate(releases)
    )


def _bump(endpoint: Endpoint, **fields: object) -> None:
    """Saves `fields` and increments config_version in one UPDATE (no lost increments)."""
    # update() skips auto_now, so updated_at is set here or it would keep the creation time.
    Endpoint.objects.filter(pk=endpoint.pk).update(
        config_version=F("config_version") + 1, updated_at=timezone.now(), **fields
    )
    endpoint.refresh_from_db(fields=["config_version", "previous_policy", "updated_at"])


def _state(endpoint: Endpoint) -> dict[str, object]:
    return {
        "traffic": endpoint_policy(endpoint),
        "fallbacks": endpoint_fallback_ids(endpoint),
        "config_version": endpoint.config_version,
    }


def _locked(endpoint: Endpoint) -> Endpoint:
    return Endpoint.objects.select_for_update().get(pk=endpoint.pk)


def endpoint_create(
    *,
    team: Team,
    name: str,
    actor: Actor,
    description: str = "",
    traffic: Sequence[TrafficEntry] = (),
    fallbacks: Sequence[Release] = (),
) -> Endpoint:
    if not ENDPOINT_NAME.match(name):
        raise ValidationError(
            {"name": "use letters, digits and . _ : / @ - (starting with a letter or digit)"}
        )
    policy = _validate_policy(team.pk, traffic) if traffic else []
    chain = _validate_fallbacks(team.pk, fallbacks)
    with transaction.atomic():
        with unique_as_field_error(_UNIQUE_NAME):
            endpoint = Endpoint.objects.create(team=team, name=name, description=description)
        _write_policy(endpoint, policy)
        _write_fallbacks(endpoint, chain)
        audit_record(
            actor=actor,
            action="endpoint.create",
            team_id=team.pk,
            target=endpoint,
            after={"name": name, "description": description, **_state(endpoint)},
        )
        publish_after_commit("endpoint", str(endpoint.pk))
    return endpoint


def endpoint_update(*, endpoint: Endpoint, actor: Actor, description: str) -> Endpoint:
    """Only the description changes in place; the name is what clients call, so it is fixed."""
    with transaction.atomic():
        locked = _locked(endpoint)
        before = {"description": locked.description}
        locked.description = description
        locked.save(update_fields=["description", "updated_at"])
        audit_record(
            actor=actor,
            action="endpoint.update",
            team_id=locked.team_id,
            target=locked,
            before=before,
            after={"description": description},
        )
    return locked


def endpoint_set_traffic(*, endpoint: Endpoint, traffic: Sequence[TrafficEntry], actor: Actor) -> Endpoint:
    """Switches the endpoint to a new policy; the current one is kept for `endpoint_rollback`."""
    policy = _validate_policy(endpoint.team_id, traffic)
    with transaction.atomic():
        locked = _locked(endpoint)
        before = _state(locked)
        new_policy = sorted(
            ({"release": e.release.pk, "weight": e.weight} for e in policy), key=lambda item: item["release"]
        )
        if new_policy == before["traffic"]:
            return locked
        _write_policy(locked, policy)
        _bump(locked, previous_policy=before["traffic"] or None)
        _record_policy_change(locked, actor=actor, action="endpoint.set_traffic", before=before)
    return locked


def _record_policy_change(locked: Endpoint, *, actor: Actor, action: str, before: dict[str, Any]) -> None:
    """Audits a routing change and tells every web process to drop its cached route after commit."""
    audit_record(
        actor=actor, action=action, team_id=locked.team_id, target=locked, before=before, after=_state(locked)
    )
    publish_after_commit("endpoint", str(locked.pk))


def endpoint_rollback(*, endpoint: Endpoint, actor: Actor) -> Endpoint:
    """Restores the policy before the last switch. The current one becomes `previous_policy`, so a
    second roll back rolls forward again."""
    with transaction.atomic():
        locked = _locked(endpoint)
        if not locked.previous_policy:
            raise ValidationError(
                {
                    "previous_policy": "nothing to roll back to: this endpoint has not been "
                    "switched since it was created"
                }
            )
        wanted = {int(item["release"]): int(item["weight"]) for item in locked.previous_policy}
        releases = Release.objects.filter(team_id=locked.team_id, pk__in=wanted)
        if len(releases) != len(wanted):
            raise ValidationError({"previous_policy": "a release of the previous policy no longer exists"})
        before = _state(locked)
        _write_policy(locked, [TrafficEntry(release=r, weight=wanted[r.pk]) for r in releases])
        _bump(locked, previous_policy=before["traffic"] or None)
        _record_policy_change(locked, actor=actor, action="endpoint.rollback", before=before)
    return locked


def endpoint_set_fallbacks(*, endpoint: Endpoint, releases: Sequence[Release], actor: Actor) -> Endpoint:
    chain = _validate_fallbacks(endpoint.team_id, releases)
    with transaction.atomic():
        locked = _locked(endpoint)
        before = _state(locked)
        if [r.pk for r in chain] == before["fallbacks"]:
            return locked
        _write_fallbacks(locked, chain)
        _bump(locked)
        _record_policy_change(locked, actor=actor, action="endpoint.set_fallbacks", before=before)
    return locked


def endpoint_delete(*, endpoint: Endpoint, actor: Actor) -> None:
    with transaction.atomic():
        locked = _locked(endpoint)
        # Deleting would empty those keys' endpoint lists, and an empty list means "every endpoint".
        active_keys = locked.api_keys.exclude(revoked_at__lte=timezone.now())
        restricted = list(active_keys.values_list("name", flat=True)[:10])
        if restricted:
            raise ValidationError(
                {
                    "endpoint": f"API keys {restricted} are restricted to this endpoint; "
                    "change or revoke them first"
                }
            )
        audit_record(
            actor=actor,
            action="endpoint.delete",
            team_id=locked.team_id,
            target=locked,
            before={"name": locked.name, **_state(locked)},
            after=None,
        )
        publish_after_commit("endpoint", str(locked.pk))
        locked.delete()
