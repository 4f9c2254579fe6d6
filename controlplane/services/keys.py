"""API key lifecycle: create (secret shown once), update, revoke, rotate with a grace period.

Every change that alters what a key may do publishes an invalidation so each web process drops
its cached principal for that key within a second.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import Enum

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from controlplane.crypto import api_key_digest, new_api_key_secret
from controlplane.models import ApiKey, Endpoint, KeyScope, Team
from controlplane.services.audit import Actor, audit_record, snapshot
from controlplane.services.common import require_limit, require_name, unique_as_field_error
from controlplane.services.events import publish_after_commit

AUDITED_FIELDS = ["name", "scopes", "expires_at", "revoked_at", "rpm_limit", "tpm_limit", "concurrency_limit"]
DEFAULT_ROTATION_GRACE = timedelta(hours=24)
MAX_ROTATION_GRACE = timedelta(days=30)
_UNIQUE_NAME = {
    "apikey_unique_team_name": ("name", "this team already has a key with this name; choose another")
}


class _Unset(Enum):
    """Marks an argument that was not passed (None is a meaningful value: "unlimited", "never")."""

    UNSET = 0


UNSET = _Unset.UNSET


def _validate_scopes(scopes: Iterable[str]) -> list[str]:
    valid = [choice.value for choice in KeyScope]
    scopes = list(dict.fromkeys(scopes))
    unknown = [scope for scope in scopes if scope not in valid]
    if unknown:
        raise ValidationError({"scopes": f"unknown scope(s) {unknown}; choose from {valid}"})
    if not scopes:
        raise ValidationError({"scopes": f"give at least one scope from {valid}"})
    return scopes


def _validate_endpoints(team_id: int, endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    endpoint_list = list(endpoints)
    foreign = [e.name for e in endpoint_list if e.team_id != team_id]
    if foreign:
        raise ValidationError({"endpoints": f"endpoints {foreign} belong to another team; use this team's"})
    return endpoint_list


def _validate_expiry(expires_at: datetime | None) -> None:
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "must be in the future (or empty for a key that never expires)"})


def _audit_view(key: ApiKey) -> dict[str, object]:
    return {**snapshot(key, AUDITED_FIELDS), "endpoints": sorted(key.endpoints.values_list("pk", flat=True))}


def api_key_create(
    *,
    team: Team,
    name: str,
    scopes: Iterable[str],
    actor: Actor,
    endpoints: Iterable[Endpoint] = (),
    expires_at: datetime | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    concurrency_limit: int | None = None,
    created_by_id: int | None = None,
) -> tuple[ApiKey, str]:
    """Creates a key and returns it with its secret; the secret is not stored and cannot be shown again."""
    name = require_name(name)
    clean_scopes = _validate_scopes(scopes)
    endpoint_list = _validate_endpoints(team.pk, endpoints)
    _validate_expiry(expires_at)
    rpm_limit, tpm_limit = require_limit(rpm_limit, "rpm_limit"), require_limit(tpm_limit, "tpm_limit")
    concurrency_limit = require_limit(concurrency_limit, "concurrency_limit")
    lookup_id, secret = new_api_key_secret()
    with transaction.atomic():
        with unique_as_field_error(_UNIQUE_NAME):
            key = ApiKey.objects.create(
                team=team,
                name=name,
                lookup_id=lookup_id,
                digest=api_key_digest(secret),
                scopes=clean_scopes,
                expires_at=expires_at,
                rpm_limit=rpm_limit,
                tpm_limit=tpm_limit,
                concurrency_limit=concurrency_limit,
                created_by_id=created_by_id,
            )
        if endpoint_list:
            key.endpoints.set(endpoint_list)
        audit_record(
            actor=actor, action="api_key.create", team_id=team.pk, target=key, after=_audit_view(key)
        )
    return key, secret


def api_key_update(
    *,
    key: ApiKey,
    actor: Actor,
    name: str | None = None,
    scopes: Iterable[str] | None = None,
    endpoints: Iterable[Endpoint] | None = None,
    expires_at: datetime | _Unset | None = UNSET,
    rpm_limit: int | _Unset | None = UNSET,
    tpm_limit: int | _Unset | None = UNSET,
    concurrency_limit: int | _Unset | None = UNSET,
) -> ApiKey:
    """Changes a key's name, scopes, endpoints, expiry or limits. None for a limit means unlimited;
    an argument that is not passed is left as it is."""
    with transaction.atomic():
        locked = ApiKey.objects.select_for_update().get(pk=key.pk)
        before = _audit_view(locked)
        if name is not None:
            locked.name = require_name(name)
        if scopes is not None:
            locked.scopes = _validate_scopes(scopes)
        if expires_at is not UNSET:
            _validate_expiry(expires_at)
            locked.expires_at = expires_at
        for field, value in (
            ("rpm_limit", rpm_limit),
            ("tpm_limit", tpm_limit),
            ("concurrency_limit", concurrency_limit),
        ):
            if value is not UNSET:
                setattr(locked, field, require_limit(value, field))
        with unique_as_field_error(_UNIQUE_NAME):
            locked.save(
                update_fields=["name", "scopes", "expires_at", "rpm_limit", "tpm_limit", "concurrency_limit"]
            )
        if endpoints is not None:
            locked.endpoints.set(_validate_endpoints(locked.team_id, endpoints))
        audit_record(
            actor=actor,
            action="api_key.update",
            team_id=locked.team_id,
            target=locked,
            before=before,
            after=_audit_view(locked),
        )
        publish_after_commit("api_key", locked.lookup_id)
    return locked


def api_key_revoke(*, key: ApiKey, actor: Actor) -> ApiKey:
    """Stops the key now. Revoking a revoked key is a no-op (no second audit row)."""
    with transaction.atomic():
        locked = ApiKey.objects.select_for_update().get(pk=key.pk)
        if locked.revoked_at is not None and locked.revoked_at <= timezone.now():
            return locked
        before = snapshot(locked, AUDITED_FIELDS)
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
        audit_record(
            actor=actor,
            action="api_key.revoke",
            team_id=locked.team_id,
            target=locked,
            before=before,
            after=snapshot(locked, AUDITED_FIELDS),
        )
        publish_after_commit("api_key", locked.lookup_id)
    return locked


def api_key_rotate(
    *, key: ApiKey, actor: Actor, grace: timedelta = DEFAULT_ROTATION_GRACE
) -> tuple[ApiKey, str]:
    """Issues a successor with the same settings; the old key keeps working for `grace`, then stops.

    The grace period lets clients pick up the new secret without an outage; 0 stops the old key now.
    """
    if not timedelta(0) <= grace <= MAX_ROTATION_GRACE:
        raise ValidationError(
            {"grace_seconds": f"must be between 0 and {int(MAX_ROTATION_GRACE.total_seconds())}"}
        )
    with transaction.atomic():
        old = ApiKey.objects.select_for_update().get(pk=key.pk)
        if not old.is_active() or old.rotated_to_id is not None:
            raise ValidationError({"key": "only an active key that has not been rotated yet can be rotated"})
        stamp = timezone.now().strftime("%Y%m%d%H%M%S")
        new, secret = api_key_create(
            team=old.team,
            name=f"{old.name[:70]} (rotated {stamp})",
            scopes=old.scopes,
            actor=actor,
            endpoints=old.endpoints.all(),
            expires_at=old.expires_at,
            rpm_limit=old.rpm_limit,
            tpm_limit=old.tpm_limit,
            concurrency_limit=old.concurrency_limit,
            created_by_id=old.created_by_id,
        )
        before = snapshot(old, AUDITED_FIELDS)
        old.revoked_at = timezone.now() + grace
        old.rotated_to = new
        old.save(update_fields=["revoked_at", "rotated_to"])
        audit_record(
            actor=actor,
            action="api_key.rotate",
            team_id=old.team_id,
            target=old,
            before=before,
            after={**snapshot(old, AUDITED_FIELDS), "rotated_to": new.pk},
        )
        publish_after_commit("api_key", old.lookup_id)
    return new, secret
