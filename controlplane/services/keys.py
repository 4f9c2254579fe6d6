"""API key lifecycle: create (secret shown once), revoke, rotate with a grace period."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from controlplane.crypto import api_key_digest, new_api_key_secret
from controlplane.models import ApiKey, Endpoint, KeyScope, Team
from controlplane.services.audit import Actor, audit_record, snapshot
from controlplane.services.events import publish_after_commit

AUDITED_FIELDS = ["name", "scopes", "expires_at", "revoked_at", "rpm_limit", "tpm_limit", "concurrency_limit"]


def _validate_scopes(scopes: Iterable[str]) -> list[str]:
    valid = {choice.value for choice in KeyScope}
    scopes = list(dict.fromkeys(scopes))
    unknown = [scope for scope in scopes if scope not in valid]
    if unknown or not scopes:
        from django.core.exceptions import ValidationError

        raise ValidationError({"scopes": f"choose one or more of {sorted(valid)}; unknown: {unknown}"})
    return scopes


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
    lookup_id, secret = new_api_key_secret()
    with transaction.atomic():
        key = ApiKey.objects.create(
            team=team, name=name, lookup_id=lookup_id, digest=api_key_digest(secret),
            scopes=_validate_scopes(scopes), expires_at=expires_at, rpm_limit=rpm_limit,
            tpm_limit=tpm_limit, concurrency_limit=concurrency_limit, created_by_id=created_by_id,
        )
        endpoint_list = list(endpoints)
        if endpoint_list:
            key.endpoints.set(endpoint_list)
        after = {**snapshot(key, AUDITED_FIELDS), "endpoints": sorted(e.pk for e in endpoint_list)}
        audit_record(actor=actor, action="api_key.create", team_id=team.pk, target=key, after=after)
    return key, secret


def api_key_revoke(*, key: ApiKey, actor: Actor) -> ApiKey:
    with transaction.atomic():
        locked = ApiKey.objects.select_for_update().get(pk=key.pk)
        if locked.revoked_at is not None and locked.revoked_at <= timezone.now():
            return locked
        before = snapshot(locked, AUDITED_FIELDS)
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
        audit_record(actor=actor, action="api_key.revoke", team_id=locked.team_id, target=locked,
                     before=before, after=snapshot(locked, AUDITED_FIELDS))
        publish_after_commit("api_key", locked.lookup_id)
    return locked


def api_key_rotate(*, key: ApiKey, actor: Actor, grace: timedelta = timedelta(hours=24)) -> tuple[ApiKey, str]:
    """Issues a successor with the same settings; the old key keeps working for `grace`, then stops."""
    with transaction.atomic():
        old = ApiKey.objects.select_for_update().get(pk=key.pk)
        if not old.is_active():
            from django.core.exceptions import ValidationError

            raise ValidationError({"key": "only an active key can be rotated"})
        stamp = timezone.now().strftime("%Y%m%d%H%M%S")
        new, secret = api_key_create(
            team=old.team, name=f"{old.name} (rotated {stamp})"[:100], scopes=old.scopes, actor=actor,
            endpoints=old.endpoints.all(), expires_at=old.expires_at, rpm_limit=old.rpm_limit,
            tpm_limit=old.tpm_limit, concurrency_limit=old.concurrency_limit,
        )
        before = snapshot(old, AUDITED_FIELDS)
        old.revoked_at = timezone.now() + grace
        old.rotated_to = new
        old.save(update_fields=["revoked_at", "rotated_to"])
        audit_record(actor=actor, action="api_key.rotate", team_id=old.team_id, target=old, before=before,
                     after={**snapshot(old, AUDITED_FIELDS), "rotated_to": new.pk})
        publish_after_commit("api_key", old.lookup_id)
    return new, secret
