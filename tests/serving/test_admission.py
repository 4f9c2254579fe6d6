"""Budgets and rate limits hold exactly across two web processes (one atomic Redis script per
request), with 429 + Retry-After + a machine-readable code for the refused ones."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal

import aiohttp
import pytest

from controlplane.models import Budget
from serving.models import UsageRecord
from tests.serving.conftest import actor, deploy, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


async def _fire(urls: list[str], secret: str, count: int, max_tokens: int) -> list[tuple[int, dict, dict]]:
    body = {"model": "chat", "messages": [{"role": "user", "content": "go"}], "max_tokens": max_tokens}
    headers = {"Authorization": f"Bearer {secret}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def one(i: int) -> tuple[int, dict, dict]:
            async with session.post(
                f"{urls[i % len(urls)]}/v1/chat/completions", json=body, headers=headers
            ) as r:
                return r.status, await r.json(), {k.lower(): v for k, v in r.headers.items()}

        return await asyncio.gather(*(one(i) for i in range(count)))


def test_hard_budget_admits_exactly_what_it_can_pay_for_across_two_processes(
    engine, two_webs, celery_worker_process
):
    from controlplane.services.budgets import budget_create

    # Output at $1000 per million tokens, input free: 2 tokens cost exactly $0.002 reserved and settled.
    d = deploy([engine.url], price_in="0", price_out="1000")
    allowed = 7
    budget = budget_create(
        team=d.team,
        name="tight",
        scope="team",
        period="month",
        limit_usd=Decimal("0.002") * allowed,
        actor=actor(),
    )
    results = asyncio.run(_fire([w.url for w in two_webs], d.secret, 100, max_tokens=2))
    statuses = Counter(status for status, _, _ in results)
    assert statuses == {200: allowed, 429: 100 - allowed}
    refused = [(body, headers) for status, body, headers in results if status == 429]
    assert all(body["error"]["code"] == "budget_exceeded" for body, _ in refused)
    assert all(int(headers["retry-after"]) > 0 for _, headers in refused)
    # The ledger: every request recorded once, and settled spend never above the limit.
    # By request id, not team: a Redis kept from an earlier run may replay records of a recycled team id.
    ids = [headers["x-request-id"] for _, _, headers in results]
    recorded = wait_for(lambda: UsageRecord.objects.filter(request_id__in=ids).count() == 100, timeout=60)
    assert recorded, f"{UsageRecord.objects.filter(request_id__in=ids).count()} of 100 usage records arrived"
    spent = UsageRecord.objects.filter(request_id__in=ids, status="ok")
    total = sum((r.cost_usd for r in spent), Decimal(0))
    assert spent.count() == allowed
    assert total <= budget.limit_usd
    assert wait_for(lambda: Budget.objects.get(pk=budget.pk).spent_usd == total)


def test_key_rpm_limit_is_exact_across_two_processes(engine, two_webs):
    d = deploy([engine.url], key_kwargs={"rpm_limit": 10})
    results = asyncio.run(_fire([w.url for w in two_webs], d.secret, 30, max_tokens=1))
    statuses = Counter(status for status, _, _ in results)
    assert statuses == {200: 10, 429: 20}
    refused = [(body, headers) for status, body, headers in results if status == 429]
    assert {body["error"]["code"] for body, _ in refused} == {"rate_limited"}
    assert all(1 <= int(headers["retry-after"]) <= 60 for _, headers in refused)
    remaining = sorted(int(h["x-ratelimit-remaining-requests"]) for status, _, h in results if status == 200)
    assert remaining == list(range(10))


def test_team_tokens_per_minute_limit_counts_reserved_tokens(engine, two_webs):
    from serving.gateway.resolve import PER_MESSAGE_OVERHEAD, PER_REQUEST_OVERHEAD
    from serving.gateway.tokens import counter_for
    from serving.models import ScopeLimit

    d = deploy([engine.url])
    # Each request reserves its prompt's token bound (the demo tokenizer's exact count of "go" plus
    # the chat template allowance) plus max_tokens=20: a TPM of four times that admits exactly four.
    counter = counter_for(d.model)
    assert counter is not None, "the demo model's tokenizer should be found for exact counts"
    per_request = counter.count("go") + PER_MESSAGE_OVERHEAD + PER_REQUEST_OVERHEAD + 20
    ScopeLimit.objects.create(team=d.team, tpm_limit=4 * per_request)
    results = asyncio.run(_fire([w.url for w in two_webs], d.secret, 12, max_tokens=20))
    assert Counter(status for status, _, _ in results) == {200: 4, 429: 8}
