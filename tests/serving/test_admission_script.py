"""The admission script against the real Redis, driven directly (no web process), over the
gateway's pipelined connection (rediswire)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from django.conf import settings

from serving.gateway.admission import Admission, Ledger
from serving.gateway.errors import BudgetExceeded, RateLimited, Unavailable
from serving.gateway.rediswire import RedisWire


def _prefix() -> str:
    return f"sb:{{t-test-{uuid.uuid4().hex[:8]}}}"


class Harness:
    def __init__(self) -> None:
        self.wire = RedisWire(settings.REDIS_URL)
        self.admission = Admission(self.wire)
        self.inspect = aioredis.Redis.from_url(settings.REDIS_URL)

    async def reserve(self, rid: str, ledgers: list[Ledger], *, tokens: int = 0, cost_nano: int = 0):
        plan = self.admission.build_plan(ledgers)
        return await self.admission.reserve(rid, plan, tokens=tokens, cost_nano=cost_nano)


def _run(coro_fn):
    async def main():
        harness = Harness()
        try:
            return await coro_fn(harness)
        finally:
            await harness.wire.close()
            await harness.inspect.aclose()

    return asyncio.run(main())


def _budget(key: str, *, limit: int, seed: int = 0, hard: bool = True) -> Ledger:
    return Ledger(
        "team budget",
        "team",
        "b",
        "budget",
        key,
        limit if hard else -1,
        60_000,
        seed=seed,
        seed_ttl_s=3600,
        budget_id=1,
        budget_period_start="2026-11-01T00:00:00+00:00",
    )


def test_budget_counter_is_seeded_from_the_database_spend_when_missing() -> None:
    key = f"{_prefix()}:bud"

    async def scenario(h: Harness) -> list[str]:
        outcomes = []
        for _ in range(3):  # limit 10, already spent 6 (the seed), 2 per request: two fit
            try:
                await h.reserve(uuid.uuid4().hex, [_budget(key, limit=10, seed=6)], cost_nano=2)
                outcomes.append("ok")
            except BudgetExceeded:
                outcomes.append("refused")
        return outcomes

    assert _run(scenario) == ["ok", "ok", "refused"]


def test_soft_budget_never_refuses_but_counts_settled_spend() -> None:
    key = f"{_prefix()}:bud"

    async def scenario(h: Harness) -> int:
        for _ in range(5):
            reservation = await h.reserve(uuid.uuid4().hex, [_budget(key, limit=1, hard=False)], cost_nano=3)
            h.admission.settle(reservation, tokens=0, cost_nano=3)
        await h.admission.flush()
        return int(await h.inspect.get(f"{key}:p"))

    assert _run(scenario) == 15


def test_concurrency_lease_is_released_on_settle_and_expires_if_never_settled() -> None:
    key = f"{_prefix()}:cc"

    def lease(hold_ms: int) -> Ledger:
        return Ledger("key concurrent requests", "key", "c", "concurrency", key, 1, hold_ms)

    async def scenario(h: Harness) -> list[str]:
        outcomes = []
        first = await h.reserve("a", [lease(60_000)])
        try:
            await h.reserve("b", [lease(60_000)])
        except RateLimited:
            outcomes.append("second refused while the first runs")
        h.admission.settle(first, tokens=0, cost_nano=0)
        await h.admission.flush()
        await h.reserve("c", [lease(200)])  # a process that dies holding this lease...
        await asyncio.sleep(0.3)
        await h.reserve("d", [lease(60_000)])  # ...does not block the slot for good
        outcomes.append("freed")
        return outcomes

    assert _run(scenario) == ["second refused while the first runs", "freed"]


def test_a_refusal_takes_nothing_from_any_ledger() -> None:
    prefix = _prefix()

    async def scenario(h: Harness) -> tuple[bytes | None, bytes | None]:
        rpm = Ledger("key requests per minute", "key", "r", "requests", f"{prefix}:rpm", 5, 60_000)
        budget = _budget(f"{prefix}:bud", limit=1)  # 2 nano-dollars: always refused
        with pytest.raises(BudgetExceeded):
            await h.reserve("x", [rpm, budget], cost_nano=2)
        return await h.inspect.get(f"{prefix}:rpm:s"), await h.inspect.get(f"{prefix}:bud:s")

    assert _run(scenario) == (None, None)


def test_token_window_settles_to_the_actual_tokens() -> None:
    key = f"{_prefix()}:tpm"

    async def scenario(h: Harness) -> list[int | None]:
        tpm = Ledger("key tokens per minute", "key", "w", "tokens", key, 100, 60_000)
        first = await h.reserve("a", [tpm], tokens=60)
        refused = None
        try:
            await h.reserve("b", [tpm], tokens=60)  # 60 + 60 > 100 while the first holds 60
        except RateLimited as exc:
            refused = exc.retry_after
        h.admission.settle(first, tokens=15, cost_nano=0)  # it used 15 of its 60
        await h.admission.flush()
        second = await h.reserve("c", [tpm], tokens=60)
        return [refused, second.remaining_tokens]

    refused_retry, remaining = _run(scenario)
    assert refused_retry is not None and 1 <= refused_retry <= 60
    assert remaining == 100 - 15 - 60


def test_script_cache_flushed_by_a_restarted_redis_is_reloaded() -> None:
    key = f"{_prefix()}:cc"

    async def scenario(h: Harness) -> int | None:
        lease = Ledger("key concurrent requests", "key", "c", "concurrency", key, 5, 60_000)
        await h.reserve("a", [lease])
        await h.inspect.script_flush()  # what a restarted Redis looks like to EVALSHA: NOSCRIPT
        return (await h.reserve("b", [lease])).remaining_requests

    assert _run(scenario) is None  # admitted (a concurrency ledger reports no remaining requests)


def test_unreachable_redis_is_unavailable_not_a_pass() -> None:
    async def scenario() -> str:
        wire = RedisWire("redis://127.0.0.1:1/0")  # nothing listens on port 1
        admission = Admission(wire)
        plan = admission.build_plan([_budget(f"{_prefix()}:bud", limit=10)])
        try:
            await admission.reserve("x", plan, tokens=0, cost_nano=1)
        except Unavailable as exc:
            return f"{exc.status} {exc.retry_after}"
        return "admitted"

    assert asyncio.run(scenario()) == "503 2"
