"""The admission script against the real Redis, driven directly (no web process)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from django.conf import settings

from serving.gateway.admission import Admission, Ledger
from serving.gateway.errors import BudgetExceeded, RateLimited


def _prefix() -> str:
    return f"sb:{{t-test-{uuid.uuid4().hex[:8]}}}"


def _run(coro_fn):
    async def main():
        client = aioredis.Redis.from_url(settings.REDIS_URL)
        try:
            return await coro_fn(Admission(client))
        finally:
            await client.aclose()

    return asyncio.run(main())


def _budget(key: str, *, limit: int, amount: int, seed: int = 0, hard: bool = True) -> Ledger:
    return Ledger(
        "team budget",
        "team",
        "b",
        "budget",
        key,
        limit if hard else -1,
        amount,
        60_000,
        seed=seed,
        seed_ttl_s=3600,
        budget_id=1,
        budget_period_start="2026-11-01T00:00:00+00:00",
    )


def test_budget_counter_is_seeded_from_the_database_spend_when_missing() -> None:
    key = f"{_prefix()}:bud"

    async def scenario(admission: Admission) -> list[str]:
        outcomes = []
        for _ in range(3):  # limit 10, already spent 6 (the seed), 2 per request: two fit
            try:
                await admission.reserve(uuid.uuid4().hex, [_budget(key, limit=10, amount=2, seed=6)])
                outcomes.append("ok")
            except BudgetExceeded:
                outcomes.append("refused")
        return outcomes

    assert _run(scenario) == ["ok", "ok", "refused"]


def test_soft_budget_never_refuses_but_counts_settled_spend() -> None:
    key = f"{_prefix()}:bud"

    async def scenario(admission: Admission) -> int:
        for _ in range(5):
            reservation = await admission.reserve(
                uuid.uuid4().hex, [_budget(key, limit=1, amount=3, hard=False)]
            )
            admission.settle(reservation, tokens=0, cost_nano=3)
        await admission.flush()
        return int(await admission.client.get(f"{key}:p"))

    assert _run(scenario) == 15


def test_concurrency_lease_is_released_on_settle_and_expires_if_never_settled() -> None:
    key = f"{_prefix()}:cc"

    def lease(hold_ms: int) -> Ledger:
        return Ledger("key concurrent requests", "key", "c", "concurrency", key, 1, 1, hold_ms)

    async def scenario(admission: Admission) -> list[str]:
        outcomes = []
        first = await admission.reserve("a", [lease(60_000)])
        try:
            await admission.reserve("b", [lease(60_000)])
        except RateLimited:
            outcomes.append("second refused while the first runs")
        admission.settle(first, tokens=0, cost_nano=0)
        await admission.flush()
        await admission.reserve("c", [lease(200)])  # a process that dies holding this lease...
        await asyncio.sleep(0.3)
        await admission.reserve("d", [lease(60_000)])  # ...does not block the slot for good
        outcomes.append("freed")
        return outcomes

    assert _run(scenario) == ["second refused while the first runs", "freed"]


def test_a_refusal_takes_nothing_from_any_ledger() -> None:
    prefix = _prefix()

    async def scenario(admission: Admission) -> tuple[bytes | None, bytes | None]:
        rpm = Ledger("key requests per minute", "key", "w", "requests", f"{prefix}:rpm", 5, 1, 60_000)
        budget = _budget(f"{prefix}:bud", limit=1, amount=2)  # always refused
        with pytest.raises(BudgetExceeded):
            await admission.reserve("x", [rpm, budget])
        return await admission.client.get(f"{prefix}:rpm:s"), await admission.client.get(f"{prefix}:bud:s")

    assert _run(scenario) == (None, None)
