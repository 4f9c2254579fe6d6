"""The gateway's per-process state: one per event loop, created on first use.

It holds the pooled aiohttp session (one per process and loop, keep-alive to every backend), the
Redis client, the catalog cache and its invalidation listener, the replica book and its health
checker, and the usage buffer's flusher. The Starlette app's lifespan starts and stops it; the
WebSocket consumer, which has no lifespan of its own, gets the same instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from django.conf import settings

from controlplane.crypto import digest_matches, parse_api_key
from controlplane.models import KeyScope
from serving.backends import BackendClient, backend_class, registered_kinds
from serving.catalog import BackendView, Catalog, Principal
from serving.gateway.admission import Admission
from serving.gateway.errors import Forbidden, Unauthorized
from serving.gateway.rediswire import RedisWire
from serving.gateway.replicas import ReplicaBook
from serving.usage import UsageBuffer

logger = logging.getLogger(__name__)
GC_THRESHOLD = 10_000


class Gateway:
    def __init__(self, *, redis_url: str) -> None:
        self.catalog = Catalog()
        self.book = ReplicaBook()
        # No socket_timeout: redis-py would wrap every write in wait_for (a task per command);
        # callers bound each call with asyncio.timeout instead.
        self.redis = aioredis.Redis.from_url(
            redis_url,
            socket_connect_timeout=1.0,
            max_connections=256,
            retry_on_timeout=False,
        )
        # The request path's Redis scripts share one pipelined connection (rediswire.py).
        self.wire = RedisWire(redis_url)
        self.admission = Admission(self.wire)
        self.plans: dict[tuple[int, ...], tuple[Any, ...]] = {}  # pipeline.Call._plan's cache
        self.usage = UsageBuffer(self.redis)
        self.session: aiohttp.ClientSession | None = None
        self.clients: dict[str, BackendClient] = {}
        self._redis_url = redis_url
        self._tasks: list[asyncio.Task[Any]] = []
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=300)
        # No cookie jar: backends are APIs, and filtering cookies per request costs time.
        self.session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        self.clients = {kind: backend_class(kind)(self.session) for kind in registered_kinds()}
        self._tasks = [
            asyncio.create_task(self.catalog.listen(self._redis_url), name="catalog-listen"),
            asyncio.create_task(self.usage.run(), name="usage-flush"),
            asyncio.create_task(self.admission.run(), name="settle"),
            asyncio.create_task(self._health_loop(), name="replica-health"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._background:
            await asyncio.wait(list(self._background), timeout=5)
        with contextlib.suppress(Exception):  # Redis down at shutdown: leases expire on their own
            await self.admission.flush()
        await self.usage.flush()
        if self.session is not None:
            await self.session.close()
        await self.wire.close()
        await self.redis.aclose()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Runs work that must finish even if the request that started it is cancelled."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthorized("send your inference key as 'Authorization: Bearer sb-...'")
        secret = authorization[7:].strip()
        return await self.principal_for_secret(secret)

    async def principal_for_secret(self, secret: str) -> Principal:
        lookup_id = parse_api_key(secret)
        if lookup_id is None:
            raise Unauthorized("the API key is malformed: keys look like sb-<id>-<secret>")
        principal = await self.catalog.principal(lookup_id)
        if principal is None or not digest_matches(secret, principal.digest):
            raise Unauthorized("invalid API key")
        if not principal.active(time.time()):
            raise Unauthorized("this API key is revoked or expired", code="key_inactive")
        if KeyScope.INFERENCE not in principal.scopes:
            raise Forbidden("this API key has no inference scope")
        return principal

    async def _health_loop(self) -> None:
        """Active health checks of every replica behind a cached endpoint."""
        last: dict[int, float] = {}
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            backends = {
                r.backend.id: r.backend
                for e in self.catalog.cached_endpoints()
                for r in [*(t[0] for t in e.traffic), *e.fallbacks]
            }
            due = [
                b
                for b in backends.values()
                if now - last.get(b.id, 0.0) >= max(b.health_check_interval_s, 1.0)
            ]
            for backend in due:
                last[backend.id] = now
            checks = [
                self._check(backend, replica.id, replica.url)
                for backend in due
                for replica in backend.replicas
            ]
            if checks:
                await asyncio.gather(*checks, return_exceptions=True)

    async def _check(self, backend: BackendView, replica_id: int, url: str) -> None:
        healthy = await self.clients[backend.kind].health(backend.target(replica_id, url))
        state = self.book.state(replica_id)
        if healthy != state.healthy:
            logger.warning(
                "replica %s of %s is now %s", replica_id, backend.name, "healthy" if healthy else "unhealthy"
            )
        self.book.set_health(replica_id, backend, healthy)


_instances: dict[int, Gateway] = {}
_locks: dict[int, asyncio.Lock] = {}


async def get_gateway() -> Gateway:
    """This loop's gateway, started on first use."""
    loop = asyncio.get_running_loop()
    found = _instances.get(id(loop))
    if found is not None:
        return found
    lock = _locks.setdefault(id(loop), asyncio.Lock())
    async with lock:
        found = _instances.get(id(loop))
        if found is None:
            found = Gateway(redis_url=settings.REDIS_URL)
            await found.start()
            _instances[id(loop)] = found
            # Everything loaded so far (Django, apps, settings) lives as long as the process:
            # freezing it keeps full garbage collections from scanning it, which otherwise
            # pause the loop for tens of milliseconds under request churn.
            gc.collect()
            gc.freeze()
            # A request allocates ~40 container objects that die young: at the default threshold
            # (700) a collection ran every ~20 requests, ~4% of the loop's time. Every ~250 keeps
            # the young generation to a few MB.
            gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    return found


async def close_gateway() -> None:
    loop = asyncio.get_running_loop()
    found = _instances.pop(id(loop), None)
    _locks.pop(id(loop), None)
    if found is not None:
        await found.stop()
