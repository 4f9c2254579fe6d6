"""The gateway's in-process snapshot of keys, endpoints, releases, backends, budgets and limits.

Nothing on the request path queries the database in steady state: each entry is loaded once (in a
worker thread, never on the event loop), kept as frozen values, and dropped when
controlplane.services.events publishes a change on `switchboard:invalidate`. A short TTL bounds
staleness if a message is lost; while the subscription is down the TTL shrinks to one second, so
a revocation still takes effect within a second in every process.

A load that started before an invalidation is not stored (an epoch counter tells), so a racing
reader cannot put the pre-change value back into the cache.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.db import DatabaseError, close_old_connections
from django.db.models import Q

from controlplane.crypto import CredentialDecryptError, decrypt_credential
from controlplane.models import (
    ApiKey,
    Backend,
    BackendReplica,
    Budget,
    Endpoint,
    EndpointFallback,
    Release,
    Team,
    TrafficSplit,
)
from controlplane.services.events import CHANNEL
from serving.backends.base import Target
from serving.gateway.errors import Unavailable
from serving.gateway.tokens import TokenCounter, counter_for
from serving.models import ScopeLimit
from serving.money import price_pico

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_TTL_S = 30.0
UNSUBSCRIBED_TTL_S = 1.0
NEGATIVE_TTL_S = 2.0  # unknown keys and endpoints: short, so a new one is usable at once
NANO = Decimal(1_000_000_000)


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None

    @property
    def empty(self) -> bool:
        return self.rpm is None and self.tpm is None and self.concurrency is None


def row_uid(pk: int, created: datetime) -> str:
    """Names a row in Redis keys: the id plus its creation time, so a database rebuilt with
    recycled ids never inherits another row's counters."""
    return f"{pk}.{int(created.timestamp() * 1000)}"


@dataclass(frozen=True, slots=True)
class BudgetView:
    id: int
    uid: str
    scope: str
    limit_nano: int
    hard: bool
    period_start: float  # epoch seconds; part of the Redis key, so a new period starts from zero
    period_start_iso: str  # exact, for matching the row when spend is rolled up
    period_end: float | None
    spent_nano: int  # settled spend in the database: seeds Redis when its counter is missing


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls: an API key, or (WebSocket only) a console user acting for one team."""

    key_id: int | None
    lookup_id: str
    digest: str
    name: str
    team_id: int
    team_slug: str
    scopes: frozenset[str]
    endpoint_ids: frozenset[int]  # empty: every endpoint of the team
    expires_at: float | None
    revoked_at: float | None
    limits: Limits
    budgets: tuple[BudgetView, ...]

    def active(self, now: float) -> bool:
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        return not (self.expires_at is not None and self.expires_at <= now)

    def may_call(self, endpoint_id: int) -> bool:
        return not self.endpoint_ids or endpoint_id in self.endpoint_ids


@dataclass(frozen=True, slots=True)
class ReplicaView:
    id: int
    url: str
    weight: int


@dataclass(frozen=True, slots=True)
class BackendView:
    id: int
    uid: str
    name: str
    kind: str
    credential: str = field(repr=False)
    replicas: tuple[ReplicaView, ...]
    max_concurrency: int
    health_check_interval_s: float
    circuit_failure_threshold: int
    circuit_cooldown_s: float
    connect_timeout_s: float
    first_token_timeout_s: float
    total_timeout_s: float
    limits: Limits
    # One call target per replica, built once: the timeout and header objects are not rebuilt
    # per request.
    targets: dict[int, Target] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        targets = {
            replica.id: Target(
                url=replica.url,
                credential=self.credential,
                connect_timeout_s=self.connect_timeout_s,
                first_token_timeout_s=self.first_token_timeout_s,
                total_timeout_s=self.total_timeout_s,
            )
            for replica in self.replicas
        }
        object.__setattr__(self, "targets", targets)

    def target(self, replica_id: int, url: str) -> Target:
        found = self.targets.get(replica_id)
        if found is None or found.url != url:
            return Target(
                url=url,
                credential=self.credential,
                connect_timeout_s=self.connect_timeout_s,
                first_token_timeout_s=self.first_token_timeout_s,
                total_timeout_s=self.total_timeout_s,
            )
        return found


@dataclass(frozen=True, slots=True)
class ReleaseView:
    id: int
    name: str
    model_version_id: int
    model_name: str
    context_window: int
    price_in_per_mtok: Decimal
    price_out_per_mtok: Decimal
    defaults: dict[str, Any]
    prompt_version: Any  # prompts.models.PromptVersion, rendered per request; None when absent
    backend: BackendView
    counter: TokenCounter | None = None  # exact prompt token counts, when the tokenizer is here
    price_in_pico: int = field(init=False, repr=False)  # pico-dollars per token (money.py)
    price_out_pico: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "price_in_pico", price_pico(self.price_in_per_mtok))
        object.__setattr__(self, "price_out_pico", price_pico(self.price_out_per_mtok))

    def cost_pico(self, tokens_in: int, tokens_out: int) -> int:
        return tokens_in * self.price_in_pico + tokens_out * self.price_out_pico


@dataclass(frozen=True, slots=True)
class EndpointView:
    id: int
    uid: str
    name: str
    team_id: int
    config_version: int
    created: int
    traffic: tuple[tuple[ReleaseView, int], ...]
    fallbacks: tuple[ReleaseView, ...]
    limits: Limits
    budgets: tuple[BudgetView, ...]


@dataclass(frozen=True, slots=True)
class TeamView:
    id: int
    uid: str
    slug: str
    limits: Limits
    budgets: tuple[BudgetView, ...]
    endpoints: tuple[tuple[int, str, int], ...]  # (id, name, created) for /v1/models


# --- loaders: run in a worker thread -------------------------------------------------------------


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def period_end(period: str, start: datetime) -> datetime | None:
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    if period == "month":
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        day = min(start.day, calendar.monthrange(year, month)[1])
        return start.replace(year=year, month=month, day=day)
    return None


def _budget_view(budget: Budget) -> BudgetView:
    end = period_end(budget.period, budget.period_start)
    return BudgetView(
        id=budget.pk,
        uid=row_uid(budget.pk, budget.created_at),
        scope=budget.scope,
        limit_nano=int(budget.limit_usd * NANO),
        hard=budget.hard,
        period_start=budget.period_start.timestamp(),
        period_start_iso=budget.period_start.isoformat(),
        period_end=_epoch(end),
        spent_nano=int(budget.spent_usd * NANO),
    )


def _limits(row: ScopeLimit | None, concurrency_floor: int | None = None) -> Limits:
    if row is None:
        return Limits(concurrency=concurrency_floor)
    concurrency = row.concurrency_limit
    if concurrency_floor is not None:
        concurrency = min(concurrency, concurrency_floor) if concurrency is not None else concurrency_floor
    return Limits(rpm=row.rpm_limit, tpm=row.tpm_limit, concurrency=concurrency)


def load_principal(lookup_id: str) -> Principal | None:
    key = ApiKey.objects.select_related("team").filter(lookup_id=lookup_id).first()
    if key is None:
        return None
    budgets = Budget.objects.filter(api_key=key, scope="key")
    return Principal(
        key_id=key.pk,
        lookup_id=key.lookup_id,
        digest=key.digest,
        name=key.name,
        team_id=key.team_id,
        team_slug=key.team.slug,
        scopes=frozenset(key.scopes),
        endpoint_ids=frozenset(key.endpoints.values_list("pk", flat=True)),
        expires_at=_epoch(key.expires_at),
        revoked_at=_epoch(key.revoked_at),
        limits=Limits(rpm=key.rpm_limit, tpm=key.tpm_limit, concurrency=key.concurrency_limit),
        budgets=tuple(_budget_view(b) for b in budgets),
    )


def load_team(team_id: int) -> TeamView | None:
    team = Team.objects.filter(pk=team_id).first()
    if team is None:
        return None
    limit_row = ScopeLimit.objects.filter(
        team_id=team_id, endpoint__isnull=True, backend__isnull=True
    ).first()
    endpoints = (
        Endpoint.objects.filter(team_id=team_id).order_by("name").values_list("pk", "name", "created_at")
    )
    return TeamView(
        id=team.pk,
        uid=row_uid(team.pk, team.created_at),
        slug=team.slug,
        limits=_limits(limit_row),
        budgets=tuple(_budget_view(b) for b in Budget.objects.filter(team_id=team_id, scope="team")),
        endpoints=tuple((pk, name, int(created.timestamp())) for pk, name, created in endpoints),
    )


def _backend_view(backend: Backend, replicas: list[BackendReplica], limit: ScopeLimit | None) -> BackendView:
    try:
        credential = decrypt_credential(backend.credentials_encrypted)
    except CredentialDecryptError:
        logger.error(
            "backend credential cannot be decrypted; calling without it", extra={"backend": backend.pk}
        )
        credential = ""
    return BackendView(
        id=backend.pk,
        uid=row_uid(backend.pk, backend.created_at),
        name=backend.name,
        kind=backend.kind,
        credential=credential,
        replicas=tuple(
            ReplicaView(id=r.pk, url=r.url, weight=max(1, r.weight)) for r in replicas if r.enabled
        ),
        max_concurrency=backend.max_concurrency,
        health_check_interval_s=float(backend.health_check_interval_s),
        circuit_failure_threshold=max(1, backend.circuit_failure_threshold),
        circuit_cooldown_s=float(backend.circuit_cooldown_s),
        connect_timeout_s=backend.connect_timeout_s,
        first_token_timeout_s=backend.first_token_timeout_s,
        total_timeout_s=backend.total_timeout_s,
        limits=_limits(limit, concurrency_floor=backend.max_concurrency or None),
    )


def _release_view(release: Release, backends: dict[int, BackendView]) -> ReleaseView:
    model = release.model_version
    defaults = {**(model.default_parameters or {}), **(release.generation_defaults or {})}
    return ReleaseView(
        id=release.pk,
        name=release.name,
        model_version_id=model.pk,
        model_name=model.served_model_name or model.hf_repo_id or model.name,
        context_window=model.context_window,
        price_in_per_mtok=model.input_price_per_mtok,
        price_out_per_mtok=model.output_price_per_mtok,
        defaults=defaults,
        prompt_version=release.prompt_version,
        backend=backends[model.backend_id],
        counter=counter_for(model),
    )


_RELEASE_RELATED = ("release__model_version", "release__prompt_version__prompt")


def load_endpoint(team_id: int, name: str) -> EndpointView | None:
    endpoint = Endpoint.objects.filter(team_id=team_id, name=name).first()
    if endpoint is None:
        return None
    splits = list(
        TrafficSplit.objects.filter(endpoint=endpoint, weight__gt=0).select_related(*_RELEASE_RELATED)
    )
    chain = list(
        EndpointFallback.objects.filter(endpoint=endpoint)
        .select_related(*_RELEASE_RELATED)
        .order_by("position")
    )
    rows: list[TrafficSplit | EndpointFallback] = [*splits, *chain]
    backend_ids = {row.release.model_version.backend_id for row in rows}
    limit_rows = ScopeLimit.objects.filter(Q(endpoint=endpoint) | Q(backend_id__in=backend_ids))
    by_backend = {row.backend_id: row for row in limit_rows if row.backend_id}
    replicas: dict[int, list[BackendReplica]] = {pk: [] for pk in backend_ids}
    for replica in BackendReplica.objects.filter(backend_id__in=backend_ids).order_by("id"):
        replicas[replica.backend_id].append(replica)
    backends = {
        b.pk: _backend_view(b, replicas[b.pk], by_backend.get(b.pk))
        for b in Backend.objects.filter(pk__in=backend_ids)
    }
    endpoint_limit = next((row for row in limit_rows if row.endpoint_id == endpoint.pk), None)
    return EndpointView(
        id=endpoint.pk,
        uid=row_uid(endpoint.pk, endpoint.created_at),
        name=endpoint.name,
        team_id=team_id,
        config_version=endpoint.config_version,
        created=int(endpoint.created_at.timestamp()),
        traffic=tuple((_release_view(s.release, backends), s.weight) for s in splits),
        fallbacks=tuple(_release_view(f.release, backends) for f in chain),
        limits=_limits(endpoint_limit),
        budgets=tuple(_budget_view(b) for b in Budget.objects.filter(endpoint=endpoint, scope="endpoint")),
    )


def _in_thread(loader: Callable[..., _T], *args: Any) -> _T:
    close_old_connections()  # a connection broken by a database restart is replaced, not reused
    return loader(*args)


# --- the cache -----------------------------------------------------------------------------------


class Catalog:
    def __init__(self, *, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.ttl_s = ttl_s
        self.subscribed = False
        self._entries: dict[tuple[Any, ...], tuple[float, float, Any]] = {}
        self._loading: dict[tuple[Any, ...], asyncio.Future[Any]] = {}
        self._epoch = 0
        self.loads = 0  # how many database loads this process did; tests read it

    async def principal(self, lookup_id: str) -> Principal | None:
        return await self._get(("key", lookup_id), load_principal, lookup_id)

    async def team(self, team_id: int) -> TeamView | None:
        return await self._get(("team", team_id), load_team, team_id)

    async def endpoint(self, team_id: int, name: str) -> EndpointView | None:
        return await self._get(("endpoint", team_id, name), load_endpoint, team_id, name)

    def cached_endpoints(self) -> list[EndpointView]:
        return [value for key, (_, _, value) in list(self._entries.items()) if key[0] == "endpoint" and value]

    def invalidate(self, kind: str, key: str) -> None:
        self._epoch += 1
        if kind == "api_key":
            self._entries.pop(("key", key), None)
            return
        # Endpoints embed releases, backends, budgets and limits: any other change drops them all.
        # Changes are rare and a reload is a handful of queries, so precision is not worth bugs.
        self._entries.clear()

    def clear(self) -> None:
        self._epoch += 1
        self._entries.clear()

    def _fresh(self, entry: tuple[float, float, Any], now: float) -> bool:
        expires, loaded, _ = entry
        if now >= expires:
            return False
        return self.subscribed or now - loaded < UNSUBSCRIBED_TTL_S

    async def _get(
        self, cache_key: tuple[Any, ...], loader: Callable[..., _T | None], *args: Any
    ) -> _T | None:
        entry = self._entries.get(cache_key)
        if entry is not None and self._fresh(entry, time.monotonic()):
            return entry[2]  # type: ignore[no-any-return]
        pending = self._loading.get(cache_key)
        if pending is None:
            pending = asyncio.ensure_future(self._load(cache_key, loader, *args))
            self._loading[cache_key] = pending
            pending.add_done_callback(lambda _: self._loading.pop(cache_key, None))
        return await asyncio.shield(pending)  # type: ignore[no-any-return]

    async def _load(
        self, cache_key: tuple[Any, ...], loader: Callable[..., _T | None], *args: Any
    ) -> _T | None:
        epoch = self._epoch
        try:
            value = await sync_to_async(_in_thread, thread_sensitive=True)(loader, *args)
        except DatabaseError as exc:
            logger.error("catalog load failed: database unavailable", extra={"entry": cache_key[0]})
            raise Unavailable("the configuration database is unavailable; retry shortly") from exc
        self.loads += 1
        if epoch == self._epoch:
            now = time.monotonic()
            ttl = self.ttl_s if value is not None else NEGATIVE_TTL_S
            self._entries[cache_key] = (now + ttl, now, value)
        return value

    async def listen(self, redis_url: str) -> None:
        """Follows the invalidation channel forever, reconnecting with backoff."""
        delay = 0.2
        while True:
            client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2, health_check_interval=10)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                self.clear()  # messages published while we were away are lost: start clean
                self.subscribed = True
                delay = 0.2
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._on_message(message.get("data"))
            except (aioredis.RedisError, OSError):
                logger.warning("cache invalidation subscription lost; entries now live 1s until it is back")
            finally:
                self.subscribed = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _on_message(self, data: Any) -> None:
        try:
            payload = json.loads(data)
            self.invalidate(str(payload["kind"]), str(payload["key"]))
        except (ValueError, KeyError, TypeError):
            self.clear()
