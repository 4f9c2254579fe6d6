"""Exact money: what admission reserves for a prompt bounds what the backend counts, so settled
spend never exceeds a budget, even for text that costs more tokens than bytes / 3 guessed (CJK on
the demo model's small byte-level vocabulary: one token a byte). A backend that reports more than
the bound anyway is charged as it reports, and the overrun is recorded."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections import Counter
from decimal import Decimal

import aiohttp
import pytest

from controlplane.models import Budget
from serving.models import UsageRecord
from tests.serving.conftest import actor, deploy, fake_openai_backend, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

# 288 UTF-8 bytes; the demo tokenizer makes 288 tokens of it, bytes / 3 guessed 97.
CJK = "東京都は日本の首都です。" * 8


def _reserved_prompt_tokens(team_id: int, endpoint: str, body: dict) -> int:
    """What the gateway's own resolve step reserves for this body's prompt."""
    from serving.catalog import load_endpoint
    from serving.gateway.protocols import parse_chat
    from serving.gateway.resolve import prepare

    view = load_endpoint(team_id, endpoint)
    assert view is not None
    return prepare(parse_chat(body), view.traffic[0][0]).generation.prompt_tokens_bound


async def _fire(urls: list[str], secret: str, body: dict, count: int) -> list[tuple[int, dict, dict]]:
    headers = {"Authorization": f"Bearer {secret}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def one(i: int) -> tuple[int, dict, dict]:
            async with session.post(
                f"{urls[i % len(urls)]}/v1/chat/completions", json=body, headers=headers
            ) as r:
                return r.status, await r.json(), {k.lower(): v for k, v in r.headers.items()}

        return await asyncio.gather(*(one(i) for i in range(count)))


@pytest.mark.parametrize(
    "hf_repo_id",
    [
        "switchboard/demo-random-llama",  # its tokenizer is on this machine: exact counts
        "switchboard/no-local-tokenizer",  # none here: the UTF-8 byte bound
    ],
)
def test_budget_for_n_multibyte_requests_is_never_overspent_across_two_processes(
    hf_repo_id, engine, two_webs, celery_worker_process
):
    from controlplane.services.budgets import budget_create

    # Input at $1000 per million tokens, output free: the cost is the prompt's tokens.
    d = deploy([engine.url], price_in="1000", price_out="0", hf_repo_id=hf_repo_id)
    body = {"model": "chat", "messages": [{"role": "user", "content": CJK}], "max_tokens": 2}
    reserved_tokens = _reserved_prompt_tokens(d.team.pk, "chat", body)
    allowed = 5
    limit = Decimal(reserved_tokens * allowed) * Decimal(1000) / Decimal(10**6)
    budget = budget_create(
        team=d.team, name="cjk", scope="team", period="month", limit_usd=limit, actor=actor()
    )
    results = asyncio.run(_fire([w.url for w in two_webs], d.secret, body, 40))
    statuses = Counter(status for status, _, _ in results)
    assert statuses[200] >= allowed and statuses[200] + statuses[429] == 40
    assert {b["error"]["code"] for s, b, _ in results if s == 429} == {"budget_exceeded"}
    ids = [headers["x-request-id"] for status, _, headers in results if status == 200]
    assert wait_for(lambda: UsageRecord.objects.filter(request_id__in=ids).count() == len(ids), timeout=60)
    served = list(UsageRecord.objects.filter(request_id__in=ids))
    # The engine's count of every prompt stayed within what was reserved for it...
    assert all(0 < r.tokens_in <= r.tokens_in_reserved == reserved_tokens for r in served)
    # ...so what was settled, summed over both processes, stays within the limit.
    settled = sum((r.cost_usd for r in served), Decimal(0))
    assert settled <= limit
    assert wait_for(lambda: Budget.objects.get(pk=budget.pk).spent_usd == settled, timeout=60)


def test_fake_backend_reporting_more_tokens_than_reserved_is_charged_as_reported_and_recorded(
    web, celery_worker_process
):
    """FAULT INJECTION: a backend that claims 5000 prompt tokens for a one-word prompt."""
    from controlplane.services.budgets import budget_create

    with fake_openai_backend(prompt_tokens=5000, completion_tokens=3) as base_url:
        d = deploy(
            [base_url],
            name="overrun",
            kind="openai",
            price_in="1",
            price_out="2",
            hf_repo_id="switchboard/no-local-tokenizer",
        )
        budget = budget_create(
            team=d.team, name="watch", scope="team", period="month", limit_usd=Decimal(1), actor=actor()
        )
        body = {"model": "overrun", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
        reserved_tokens = _reserved_prompt_tokens(d.team.pk, "overrun", body)
        request = urllib.request.Request(
            f"{web.url}/v1/chat/completions",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {d.secret}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
            charged = Decimal(response.headers["x-switchboard-cost-usd"])
            request_id = response.headers["x-request-id"]
    assert reserved_tokens < 5000
    assert answer["usage"]["prompt_tokens"] == 5000
    assert charged == (5000 * Decimal(1) + 3 * Decimal(2)) / Decimal(10**6)  # as the backend reported
    record = wait_for(lambda: UsageRecord.objects.filter(request_id=request_id).first())
    assert record is not None
    assert (record.tokens_in, record.tokens_in_reserved, record.tokens_out_reserved) == (
        5000,
        reserved_tokens,
        3,
    )
    assert wait_for(lambda: Budget.objects.get(pk=budget.pk).spent_usd == charged, timeout=60)
    with urllib.request.urlopen(f"{web.url}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert 'switchboard_gateway_over_reservation_total{endpoint="overrun"}' in metrics
