"""One request through the gateway: resolve → admission → route/relay with retry → settle.

A `Call` is transport-neutral: the HTTP routes and the WebSocket consumer drive the same object.
Retries and fallbacks happen only before the first token reaches the client; after that a failure
ends the stream with an error event. `finish()` is synchronous and idempotent so it can run from
cancellation paths; the Redis settlement it starts runs as its own task, off the client's path.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from serving import metrics
from serving.backends import BackendError, ChunkStream, StreamCut
from serving.catalog import EndpointView, Principal, ReleaseView, TeamView
from serving.gateway.admission import LEASE_SLACK_MS, AdmissionPlan, AdmissionScopes, Reservation, plan
from serving.gateway.errors import GatewayError, NotFound, UpstreamError, UpstreamTimeout
from serving.gateway.protocols import ClientRequest
from serving.gateway.resolve import (
    COUNT_INLINE_MAX_CHARS,
    Prepared,
    pick_release,
    prepare,
    prepare_embeddings,
    prompt_size,
)
from serving.gateway.routing import choose_replica
from serving.gateway.runtime import Gateway
from serving.money import nano_from_pico, usd_text
from serving.types import Completion, EmbeddingResult, RouteDecision, TokenChunk

logger = logging.getLogger(__name__)

ATTEMPTS_PER_RELEASE = 3
BACKOFF_BASE_S = 0.05
PLAN_CACHE_SIZE = 4096


class Call:
    def __init__(
        self, gateway: Gateway, principal: Principal, request: ClientRequest, request_id: str
    ) -> None:
        self.gw = gateway
        self.principal = principal
        self.request = request
        self.request_id = request_id
        self.t0 = time.perf_counter()
        self.occurred_at = time.time()
        self.endpoint: EndpointView | None = None
        self.release: ReleaseView | None = None
        self.prepared: Prepared | None = None
        self.candidates: list[tuple[ReleaseView, Prepared]] = []
        self.reservation: Reservation | None = None
        self.decision: RouteDecision | None = None
        self.stream: ChunkStream | None = None
        self.first: TokenChunk | None = None
        self.final: TokenChunk | None = None
        self.delivered = 0
        self.t_dispatch = 0.0
        self.t_first = 0.0
        self.finished = False
        self.cost_pico = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.over_reservation = False
        self.series: metrics.EndpointSeries | None = None

    # --- resolve and admission -----------------------------------------------------------------

    async def admit(self) -> None:
        principal = self.principal
        team = await self.gw.catalog.team(principal.team_id)
        endpoint = await self.gw.catalog.endpoint(principal.team_id, self.request.endpoint)
        if endpoint is None or team is None or not principal.may_call(endpoint.id):
            message = f"no endpoint named '{self.request.endpoint}' for this key"
            raise NotFound(f"{message}: GET /v1/models lists the ones it may call", code="model_not_found")
        self.endpoint = endpoint
        self.series = metrics.series(endpoint.name)
        self.series.in_flight.inc()
        subject = self.request.user or (
            f"key:{principal.lookup_id}" if principal.lookup_id else f"user:{principal.name}"
        )
        primary = pick_release(endpoint, subject)
        self.release = primary
        self.prepared = await self._prepare(primary)
        self.candidates = [(primary, self.prepared)]
        if endpoint.fallbacks:
            self.candidates += await self._fallbacks(endpoint, primary)
        await self._reserve(team, endpoint)

    async def _prepare(self, release: ReleaseView) -> Prepared:
        if self.request.api == "embeddings":
            return prepare_embeddings(self.request, release)
        if release.counter is not None and prompt_size(self.request) > COUNT_INLINE_MAX_CHARS:
            # Exact counting of a long prompt takes milliseconds: not on the event loop.
            return await asyncio.to_thread(prepare, self.request, release)
        return prepare(self.request, release)

    async def _fallbacks(
        self, endpoint: EndpointView, primary: ReleaseView
    ) -> list[tuple[ReleaseView, Prepared]]:
        out = []
        for release in endpoint.fallbacks:
            if release.id == primary.id:
                continue
            try:
                out.append((release, await self._prepare(release)))
            except GatewayError:  # e.g. a smaller context window: that fallback cannot take this request
                continue
        return out

    async def _reserve(self, team: TeamView, endpoint: EndpointView) -> None:
        assert self.prepared is not None and self.release is not None
        generation = self.prepared.generation
        # Reserve the worst case over every release that may serve, so a fallback cannot overspend.
        worst = max(
            r.cost_pico(p.generation.prompt_tokens_bound, p.generation.max_tokens) for r, p in self.candidates
        )
        self.reservation = await self.gw.admission.reserve(
            self.request_id,
            self._plan(team, endpoint, self.release),
            tokens=generation.prompt_tokens_bound + generation.max_tokens,
            cost_nano=nano_from_pico(worst),
        )

    def _plan(self, team: TeamView, endpoint: EndpointView, release: ReleaseView) -> AdmissionPlan:
        """The admission plan of these (immutable) catalog views: built once, then reused."""
        principal = self.principal
        cache = self.gw.plans
        key = (id(principal), id(team), id(endpoint), id(release))
        entry = cache.get(key)
        # Keyed by identity: the entry holds the views, so while it lives no other object can have
        # their ids, and a reloaded view (a new object) gets a plan of its own.
        if entry is not None:
            return entry[4]
        # Leases outlive the slowest release that may serve (every fallback included).
        releases = [release, *endpoint.fallbacks]
        lease_ms = int(max(r.backend.total_timeout_s for r in releases) * 1000) + LEASE_SLACK_MS
        scopes = AdmissionScopes(
            team=team.uid,
            key=principal.lookup_id or None,
            endpoint=endpoint.uid,
            backend=release.backend.uid,
            key_limits=principal.limits,
            team_limits=team.limits,
            endpoint_limits=endpoint.limits,
            backend_limits=release.backend.limits,
            budgets=(*principal.budgets, *team.budgets, *endpoint.budgets),
        )
        built = self.gw.admission.build_plan(plan(scopes, lease_ms=lease_ms))
        if len(cache) >= PLAN_CACHE_SIZE:
            cache.clear()
        cache[key] = (principal, team, endpoint, release, built)
        return built

    # --- dispatch with retries and fallback (before the first token only) -------------------------

    async def open_stream(self) -> None:
        await self._dispatch(streaming=True)

    async def complete(self) -> Completion:
        result = await self._dispatch(streaming=False)
        assert isinstance(result, Completion)
        return result

    async def embed(self) -> EmbeddingResult:
        result = await self._dispatch(streaming=False)
        assert isinstance(result, EmbeddingResult)
        return result

    async def _dispatch(self, *, streaming: bool) -> Completion | EmbeddingResult | None:
        last_error = "no replica is available"
        timed_out = False
        attempt = 0
        for release, prepared in self.candidates:
            failed: set[int] = set()
            for _ in range(ATTEMPTS_PER_RELEASE):
                snapshot = self.gw.book.snapshot(release.backend)
                decision = choose_replica(snapshot, affinity=prepared.affinity, exclude=frozenset(failed))
                if decision is None and failed:
                    decision = choose_replica(snapshot, affinity=prepared.affinity)
                if decision is None:
                    break
                if attempt:
                    await asyncio.sleep(BACKOFF_BASE_S * 2 ** min(attempt - 1, 4) * (1 + random.random()))
                attempt += 1
                try:
                    return await self._attempt(release, prepared, decision, streaming=streaming)
                except TimeoutError:
                    last_error, timed_out = "the backend did not answer in time", True
                except BackendError as exc:
                    if not exc.retryable:
                        self._fail_attempt(release, decision, count=False)
                        raise _rejected(exc) from exc
                    last_error = exc.message
                self._fail_attempt(release, decision, count=True)
                failed.add(decision.replica_id)
        error_class = UpstreamTimeout if timed_out else UpstreamError
        raise error_class(
            f"every backend failed before the first token ({last_error}); retry shortly", retry_after=1
        )

    def _fail_attempt(self, release: ReleaseView, decision: RouteDecision, *, count: bool) -> None:
        self.gw.book.end(decision.replica_id)
        if count:
            self.gw.book.failure(decision.replica_id, release.backend)

    async def _attempt(
        self, release: ReleaseView, prepared: Prepared, decision: RouteDecision, *, streaming: bool
    ) -> Completion | EmbeddingResult | None:
        backend = release.backend
        client = self.gw.clients[backend.kind]
        target = backend.target(decision.replica_id, decision.url)
        self.gw.book.begin(decision.replica_id, probe=decision.reason == "half_open_probe")
        self.t_dispatch = self.t_dispatch or time.perf_counter()
        started = time.perf_counter()
        result: Completion | EmbeddingResult | None = None
        try:
            # asyncio.timeout, not wait_for: no extra task per attempt on the hot path.
            if streaming:
                async with asyncio.timeout(backend.first_token_timeout_s):
                    await self._first_token(client, target, prepared)
            elif prepared.generation.api == "embeddings":
                async with asyncio.timeout(backend.total_timeout_s):
                    result = await client.embed(
                        target, model=prepared.generation.model, inputs=list(self.request.inputs)
                    )
            else:
                async with asyncio.timeout(backend.total_timeout_s):
                    result = await client.generate(target, prepared.generation)
        except asyncio.CancelledError:  # the client left (or shutdown): the attempt ends, not failed
            self.gw.book.end(decision.replica_id)
            raise
        self.t_first = time.perf_counter()
        self.gw.book.success(decision.replica_id, backend, (self.t_first - started) * 1000)
        self.release, self.prepared, self.decision = release, prepared, decision
        return result

    async def _first_token(self, client: Any, target: Any, prepared: Prepared) -> None:
        stream: ChunkStream = await client.stream(target, prepared.generation)
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            stream.close()
            raise StreamCut("the backend ended the stream without a token") from None
        except BaseException:
            stream.close()
            raise
        self.stream, self.first = stream, first

    # --- streaming ------------------------------------------------------------------------------

    def take_first(self) -> TokenChunk:
        assert self.first is not None
        return self._count(self.first)

    async def next_chunk(self) -> TokenChunk | None:
        """The next chunk, or None after the final one. Raises StreamCut when the stream breaks."""
        if self.final is not None or self.stream is None:
            return None
        try:
            chunk = await self.stream.__anext__()
        except StopAsyncIteration:
            raise StreamCut() from None
        return self._count(chunk)

    def _count(self, chunk: TokenChunk) -> TokenChunk:
        if chunk.finish_reason is not None:
            self.final = chunk
            if chunk.text or chunk.token_id is not None:
                self.delivered += 1
        else:
            self.delivered += 1
        return chunk

    def ready(self) -> bool:
        """True when the next chunk is already here (no wait on the backend)."""
        return self.stream is not None and self.stream.ready()

    def cancel(self) -> None:
        """Stops the upstream generation now (closing the connection makes the backend drop it)."""
        if self.stream is not None:
            self.stream.close()

    # --- settle ---------------------------------------------------------------------------------

    def settle_tokens(self, *, completed: Completion | None = None, billable: bool = True) -> None:
        """Fixes the tokens and cost to bill: the backend's counts, else the gateway's estimate of
        the prompt (never above what was reserved for it) and the tokens delivered."""
        assert self.prepared is not None and self.release is not None
        generation = self.prepared.generation
        estimate = generation.prompt_tokens_estimate
        if completed is not None:
            self.tokens_in, self.tokens_out = completed.prompt_tokens, completed.completion_tokens
        elif self.final is not None:
            self.tokens_in = self.final.prompt_tokens or estimate
            self.tokens_out = (
                self.final.completion_tokens if self.final.completion_tokens is not None else self.delivered
            )
        elif billable and self.first is not None:
            self.tokens_in, self.tokens_out = estimate, self.delivered  # a cut or cancelled stream
        # A backend that counts more than the reservation allowed is charged as it reports (it did
        # the work) and the request is marked, so an overrun of a budget is visible, not silent.
        self.over_reservation = (
            self.tokens_in > generation.prompt_tokens_bound or self.tokens_out > generation.max_tokens
        )
        self.cost_pico = self.release.cost_pico(self.tokens_in, self.tokens_out)

    def finish(self, *, status: str, http_status: int, finish_reason: str = "", error_type: str = "") -> None:
        if self.finished:
            return
        self.finished = True
        if self.stream is not None:
            self.stream.close()
        if self.decision is not None:
            self.gw.book.end(self.decision.replica_id)
        if self.reservation is not None:
            self.gw.admission.settle(
                self.reservation,
                tokens=self.tokens_in + self.tokens_out,
                cost_nano=nano_from_pico(self.cost_pico),
            )
        if self.endpoint is not None:
            self._record(status, http_status, finish_reason, error_type)

    def _record(self, status: str, http_status: int, finish_reason: str, error_type: str) -> None:
        assert self.endpoint is not None
        latency_s = time.perf_counter() - self.t0
        ttft_ms = (self.t_first - self.t0) * 1000 if self.t_first else None
        release = self.release
        reservation = self.reservation
        budgets = (
            [
                [x.budget_id, x.budget_period_start]
                for x in reservation.plan.ledgers
                if x.budget_id is not None
            ]
            if reservation is not None and self.cost_pico
            else []
        )
        reserved = self.prepared.generation if reservation is not None and self.prepared is not None else None
        # Positional, in serving.usage.RECORD_FIELDS order (encoded off the request path).
        self.gw.usage.add(
            (
                self.request_id,
                self.occurred_at,
                self.principal.team_id,
                self.principal.key_id,
                self.endpoint.id,
                release.id if release else None,
                release.model_version_id if release else None,
                self.endpoint.name,
                release.name if release else "",
                self.decision.url if self.decision else "",
                self.request.api,
                self.tokens_in,
                self.tokens_out,
                usd_text(self.cost_pico),
                ttft_ms,
                latency_s * 1000,
                status,
                http_status,
                finish_reason,
                error_type,
                reserved.prompt_tokens_bound if reserved is not None else 0,
                reserved.max_tokens if reserved is not None else 0,
                budgets,
            )
        )
        self._observe(status, latency_s, ttft_ms)

    def _observe(self, status: str, latency_s: float, ttft_ms: float | None) -> None:
        series = self.series
        assert series is not None
        series.in_flight.dec()
        series.requests(self.release.name if self.release else "", status).inc()
        series.latency.observe(latency_s)
        if ttft_ms is not None and self.request.stream:  # a non-streamed answer's first token is its last
            series.ttft.observe(ttft_ms / 1000)
        if self.tokens_in or self.tokens_out:
            series.tokens_in.inc(self.tokens_in)
            series.tokens_out.inc(self.tokens_out)
            series.cost.inc(self.cost_pico / 1e12)
        if self.over_reservation:
            series.over_reservation.inc()
            generation = self.prepared.generation if self.prepared is not None else None
            logger.warning(
                "backend reported more tokens than reserved (%d in / %d out, reserved %s / %s); "
                "charged as reported",
                self.tokens_in,
                self.tokens_out,
                generation.prompt_tokens_bound if generation else "?",
                generation.max_tokens if generation else "?",
                extra={"request_id": self.request_id},
            )

    # --- headers ---------------------------------------------------------------------------------

    def overhead_ms(self) -> float:
        """Gateway time: before the first dispatch, plus after the first token/answer arrived."""
        if not self.t_dispatch:
            return (time.perf_counter() - self.t0) * 1000
        return ((self.t_dispatch - self.t0) + (time.perf_counter() - self.t_first)) * 1000

    def headers(self, *, with_cost: bool) -> list[tuple[bytes, bytes]]:
        """The gateway's response headers, as raw ASGI pairs."""
        headers = [(b"x-request-id", self.request_id.encode())]
        if self.endpoint is not None:
            headers.append((b"x-switchboard-endpoint", self.endpoint.name.encode()))
        if self.release is not None:
            headers.append((b"x-switchboard-release", self.release.name.encode()))
            if self.decision is not None:
                replica = f"{self.release.backend.name}/{self.decision.replica_id}"
                headers.append((b"x-switchboard-replica", replica.encode()))
        if with_cost:
            headers.append((b"x-switchboard-cost-usd", usd_text(self.cost_pico).encode()))
        reservation = self.reservation
        if reservation is not None and reservation.remaining_requests is not None:
            headers.append((b"x-ratelimit-remaining-requests", b"%d" % reservation.remaining_requests))
        if reservation is not None and reservation.remaining_tokens is not None:
            headers.append((b"x-ratelimit-remaining-tokens", b"%d" % reservation.remaining_tokens))
        overhead_ms = self.overhead_ms()
        metrics.OVERHEAD.observe(overhead_ms / 1000)
        headers.append((b"x-switchboard-overhead-ms", b"%.3f" % overhead_ms))
        return headers

    def summary(self) -> dict[str, Any]:
        """What the final stream event and the WebSocket's last frame report about the request."""
        return {
            "request_id": self.request_id,
            "release": self.release.name if self.release else "",
            "cost_usd": usd_text(self.cost_pico),
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
        }


def _rejected(exc: BackendError) -> GatewayError:
    """The backend refused the request itself (bad parameters): the client's to fix, not retried."""
    error = GatewayError(f"the backend rejected the request: {exc.message}", code="backend_rejected")
    error.status = exc.status if 400 <= exc.status < 500 else 502
    return error
