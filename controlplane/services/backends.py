"""Inference backends: registration, replicas, encrypted credentials, and "test connection".

Credentials are encrypted before they reach the row and never come back out of this module in
clear except to the probe request itself; audit rows record only whether credentials are set.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from controlplane.crypto import CredentialDecryptError, decrypt_credential, encrypt_credential
from controlplane.models import Backend, BackendKind, BackendReplica, Team
from controlplane.selectors import endpoint_ids_using_backend
from controlplane.services.audit import Actor, audit_record, snapshot
from controlplane.services.common import MAX_INT32, require_name, unique_as_field_error
from controlplane.services.events import publish_after_commit

# Tunables an operator may set; each must be positive. Ints and floats as on the model.
SETTING_FIELDS: dict[str, type] = {
    "max_concurrency": int,
    "health_check_interval_s": int,
    "circuit_failure_threshold": int,
    "circuit_cooldown_s": int,
    "connect_timeout_s": float,
    "first_token_timeout_s": float,
    "total_timeout_s": float,
}
# The probe is interactive (an operator waits for it): fail fast rather than hang a web worker.
PROBE_TIMEOUT_S = 5.0
_UNIQUE_NAME = {"backend_unique_team_name": ("name", "this team already has a backend with this name")}


@dataclass(frozen=True)
class ReplicaSpec:
    url: str
    enabled: bool = True
    weight: int = 1


@dataclass(frozen=True)
class ReplicaProbe:
    """What one replica answered to the connection test."""

    url: str
    ok: bool
    status: int | None
    detail: str
    latency_ms: float
    models: tuple[str, ...] = ()


def _validate_kind(kind: str) -> BackendKind:
    try:
        return BackendKind(kind)
    except ValueError:
        raise ValidationError({"kind": f"choose one of {[k.value for k in BackendKind]}"}) from None


def _validate_replicas(replicas: Sequence[ReplicaSpec]) -> list[ReplicaSpec]:
    clean: list[ReplicaSpec] = []
    for spec in replicas:
        parts = urlsplit(spec.url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError(
                {"replicas": f"{spec.url!r}: give an http(s) URL such as http://10.0.0.5:8080"}
            )
        if parts.username or parts.password:
            raise ValidationError({"replicas": "put secrets in `credentials`, not in the replica URL"})
        if parts.query or parts.fragment:
            raise ValidationError({"replicas": f"{spec.url!r}: a replica URL takes no query or fragment"})
        if spec.weight < 1:
            raise ValidationError({"replicas": f"{spec.url!r}: weight must be 1 or more"})
        clean.append(ReplicaSpec(url=spec.url.strip().rstrip("/"), enabled=spec.enabled, weight=spec.weight))
    urls = [spec.url for spec in clean]
    if len(set(urls)) != len(urls):
        raise ValidationError({"replicas": "each replica URL may appear once"})
    return clean


def _validate_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(values) - set(SETTING_FIELDS))
    if unknown:
        raise ValidationError({"settings": f"unknown setting(s) {unknown}; known: {sorted(SETTING_FIELDS)}"})
    clean: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_INT32:
            raise ValidationError({name: f"must be a positive number up to {MAX_INT32}"})
        if SETTING_FIELDS[name] is int and int(value) != value:
            raise ValidationError({name: "must be a whole number"})
        clean[name] = SETTING_FIELDS[name](value)
    return clean


def _audit_view(backend: Backend) -> dict[str, Any]:
    view = snapshot(backend, ["name", "kind", *SETTING_FIELDS])
    view["replicas"] = [
        {"url": r.url, "enabled": r.enabled, "weight": r.weight} for r in backend.replicas.order_by("id")
    ]
    # Named so the redactor keeps it: only the fact that a credential is set is ever audited.
    view["auth_configured"] = backend.has_credentials
    return view


def _replace_replicas(backend: Backend, replicas: Sequence[ReplicaSpec]) -> None:
    backend.replicas.all().delete()
    BackendReplica.objects.bulk_create(
        BackendReplica(backend=backend, url=s.url, enabled=s.enabled, weight=s.weight) for s in replicas
    )


def _publish_routing_change(backend: Backend) -> None:
    publish_after_commit("backend", str(backend.pk))
    for endpoint_id in endpoint_ids_using_backend(backend.pk):
        publish_after_commit("endpoint", str(endpoint_id))


def backend_create(
    *,
    team: Team,
    name: str,
    kind: str,
    actor: Actor,
    replicas: Sequence[ReplicaSpec] = (),
    credentials: str = "",
    settings: Mapping[str, Any] | None = None,
) -> Backend:
    name = require_name(name)
    clean_kind = _validate_kind(kind)
    clean_replicas = _validate_replicas(replicas)
    clean_settings = _validate_settings(settings or {})
    with transaction.atomic():
        with unique_as_field_error(_UNIQUE_NAME):
            backend = Backend.objects.create(
                team=team,
                name=name,
                kind=clean_kind,
                credentials_encrypted=encrypt_credential(credentials),
                **clean_settings,
            )
        _replace_replicas(backend, clean_replicas)
        audit_record(
            actor=actor, action="backend.create", team_id=team.pk, target=backend, after=_audit_view(backend)
        )
    return backend


def backend_update(
    *,
    backend: Backend,
    actor: Actor,
    name: str | None = None,
    replicas: Sequence[ReplicaSpec] | None = None,
    credentials: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Backend:
    """Changes what is passed. `credentials=None` keeps the stored one; "" removes it."""
    clean_replicas = None if replicas is None else _validate_replicas(replicas)
    clean_settings = _validate_settings(settings or {})
    with transaction.atomic():
        locked = Backend.objects.select_for_update().get(pk=backend.pk)
        before = _audit_view(locked)
        locked.name = locked.name if name is None else require_name(name)
        if credentials is not None:
            locked.credentials_encrypted = encrypt_credential(credentials)
        for field, value in clean_settings.items():
            setattr(locked, field, value)
        with unique_as_field_error(_UNIQUE_NAME):
            locked.save(update_fields=["name", "credentials_encrypted", *SETTING_FIELDS])
        if clean_replicas is not None:
            _replace_replicas(locked, clean_replicas)
        after = _audit_view(locked)
        if credentials is not None:
            # Replacing one credential with another leaves the view equal; the diff must still say so.
            before["auth_changed"], after["auth_changed"] = False, True
        audit_record(
            actor=actor,
            action="backend.update",
            team_id=locked.team_id,
            target=locked,
            before=before,
            after=after,
        )
        _publish_routing_change(locked)
    return locked


def backend_delete(*, backend: Backend, actor: Actor) -> None:
    with transaction.atomic():
        locked = Backend.objects.select_for_update().get(pk=backend.pk)
        in_use = list(locked.model_versions.values_list("name", flat=True)[:10])
        if in_use:
            raise ValidationError(
                {
                    "backend": f"model versions {in_use} are served by this backend; "
                    "move them to another backend first"
                }
            )
        audit_record(
            actor=actor,
            action="backend.delete",
            team_id=locked.team_id,
            target=locked,
            before=_audit_view(locked),
            after=None,
        )
        publish_after_commit("backend", str(locked.pk))
        locked.delete()


def _probe_url(kind: str, base_url: str) -> str:
    if kind != BackendKind.OPENAI:
        return f"{base_url}/info"
    # Hosted APIs are registered either as the host or as the /v1 base the SDKs use.
    return f"{base_url}/models" if base_url.endswith("/v1") else f"{base_url}/v1/models"


def _models_in(kind: str, body: Any) -> tuple[str, ...]:
    if not isinstance(body, dict):
        return ()
    if kind != BackendKind.OPENAI:
        return (str(body["model_id"]),) if body.get("model_id") else ()
    data = body.get("data")
    return tuple(str(m.get("id")) for m in data[:50] if isinstance(m, dict)) if isinstance(data, list) else ()


def _probe_replica(kind: str, base_url: str, credential: str) -> ReplicaProbe:
    # The URL was checked to be http(s) when the replica was saved (_validate_replicas).
    url = _probe_url(kind, base_url)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if credential:
        request.add_header("Authorization", f"Bearer {credential}")
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
            status, raw = response.status, response.read(1_000_000)
    except urllib.error.HTTPError as exc:
        return ReplicaProbe(base_url, False, exc.code, f"HTTP {exc.code} {exc.reason}", _ms(started))
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return ReplicaProbe(
            base_url, False, None, f"unreachable: {type(exc).__name__}: {reason}"[:300], _ms(started)
        )
    try:
        models = _models_in(kind, json.loads(raw))
    except ValueError:
        return ReplicaProbe(base_url, False, status, "answered, but not with JSON", _ms(started))
    detail = f"HTTP {status}; serves {', '.join(models[:5]) or 'no model listed'}"
    return ReplicaProbe(base_url, True, status, detail, _ms(started), models)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _scrub(probe: ReplicaProbe, credential: str) -> ReplicaProbe:
    """An error text that echoes the request could carry the bearer token; never store that."""
    if credential and credential in probe.detail:
        return ReplicaProbe(
            probe.url,
            probe.ok,
            probe.status,
            probe.detail.replace(credential, "[redacted]"),
            probe.latency_ms,
            probe.models,
        )
    return probe


def backend_test_connection(*, backend: Backend, actor: Actor) -> dict[str, Any]:
    """Calls each enabled replica (`/info`, or `/v1/models` for hosted APIs) and records the result.

    The network calls run before the transaction, so no row lock is held while a replica is slow;
    a failure is data (ok: false), never an exception.
    """
    try:
        credential = decrypt_credential(backend.credentials_encrypted)
        decrypt_error = ""
    except CredentialDecryptError as exc:
        credential, decrypt_error = "", str(exc)
    replicas = list(backend.replicas.filter(enabled=True).order_by("id"))
    probes = [_scrub(_probe_replica(backend.kind, r.url, credential), credential) for r in replicas]
    ok = bool(probes) and all(p.ok for p in probes) and not decrypt_error
    result: dict[str, Any] = {
        "ok": ok,
        "detail": decrypt_error or ("" if probes else "no enabled replica to test; add a replica URL"),
        "replicas": [{**asdict(p), "models": list(p.models)} for p in probes],
    }
    with transaction.atomic():
        locked = Backend.objects.select_for_update().get(pk=backend.pk)
        locked.last_test_result = result
        locked.last_tested_at = timezone.now()
        locked.save(update_fields=["last_test_result", "last_tested_at"])
        audit_record(
            actor=actor,
            action="backend.test_connection",
            team_id=locked.team_id,
            target=locked,
            after={"ok": ok, "replicas": [{"url": p.url, "ok": p.ok, "detail": p.detail} for p in probes]},
            outcome="success" if ok else "failure",
        )
    backend.last_test_result, backend.last_tested_at = locked.last_test_result, locked.last_tested_at
    return result
