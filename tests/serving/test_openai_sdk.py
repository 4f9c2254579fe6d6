"""The official `openai` SDK, with only base_url and api_key set, against the gateway and a real
engine replica: sync and async, streaming and not, plus the headers and the usage ledger."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import openai
import pytest

from serving.models import UsageRecord
from tests.serving.conftest import deploy, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _client(web, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{web.url}/v1", api_key=secret, max_retries=0, timeout=60)


def test_sync_chat_completion_returns_text_usage_and_gateway_headers(engine, web, celery_worker_process):
    d = deploy([engine.url])
    raw = _client(web, d.secret).chat.completions.with_raw_response.create(
        model="chat",
        messages=[{"role": "user", "content": "Say something"}],
        max_tokens=6,
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage.completion_tokens == 6
    assert completion.choices[0].finish_reason == "length"
    assert raw.headers["x-switchboard-endpoint"] == "chat"
    assert raw.headers["x-switchboard-release"] == "chat-v1"
    assert raw.headers["x-switchboard-replica"].startswith("chat-backend/")
    expected = (Decimal(completion.usage.prompt_tokens) * Decimal("0.10") + 6 * Decimal("0.20")) / Decimal(
        10**6
    )
    assert Decimal(raw.headers["x-switchboard-cost-usd"]) == expected
    assert float(raw.headers["x-switchboard-overhead-ms"]) >= 0
    request_id = raw.headers["x-request-id"]
    record = wait_for(lambda: UsageRecord.objects.filter(request_id=request_id).first())
    assert record is not None, "the usage record never arrived"
    assert (record.tokens_out, record.status, record.api_key_id) == (6, "ok", d.key.pk)
    assert record.cost_usd == expected


def test_sync_stream_with_include_usage_relays_tokens_and_final_usage(engine, web):
    deploy([engine.url])  # another team's "chat": the key below must not see it
    d = deploy([engine.url])
    stream = _client(web, d.secret).chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "Count"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = chunks[-1].usage
    assert text
    assert finish == ["length"]
    assert usage is not None and usage.completion_tokens == 8


def test_async_client_streams_and_completes(engine, web):
    d = deploy([engine.url])

    async def run() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=f"{web.url}/v1", api_key=d.secret, max_retries=0, timeout=60)
        stream = await client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=5,
            stream=True,
        )
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        completion = await client.completions.create(model="chat", prompt="def main():", max_tokens=5)
        await client.close()
        return streamed, completion.choices[0].text

    streamed, completed = asyncio.run(run())
    assert streamed and completed


def test_legacy_completions_stream(engine, web):
    d = deploy([engine.url])
    stream = _client(web, d.secret).completions.create(
        model="chat", prompt="import os", max_tokens=4, stream=True
    )
    pieces = list(stream)
    assert "".join(p.choices[0].text for p in pieces if p.choices)
    assert pieces[-1].choices[0].finish_reason == "length"


def test_models_lists_only_the_endpoints_the_key_may_call(engine, web):
    from controlplane.services.endpoints import TrafficEntry, endpoint_create
    from controlplane.services.keys import api_key_create
    from tests.serving.conftest import actor

    d = deploy([engine.url])
    endpoint_create(team=d.team, name="other", actor=actor(), traffic=[TrafficEntry(d.release, 100)])
    _, narrow = api_key_create(
        team=d.team, name="narrow", scopes=["inference"], actor=actor(), endpoints=[d.endpoint]
    )
    assert sorted(m.id for m in _client(web, d.secret).models.list()) == ["chat", "other"]
    assert [m.id for m in _client(web, narrow).models.list()] == ["chat"]
    with pytest.raises(openai.NotFoundError) as info:
        _client(web, narrow).chat.completions.create(
            model="other", messages=[{"role": "user", "content": "x"}]
        )
    assert "GET /v1/models" in str(info.value)


def test_embeddings_come_from_the_engine(engine, web):
    d = deploy([engine.url])
    result = _client(web, d.secret).embeddings.create(model="chat", input=["hello world", "goodbye"])
    assert len(result.data) == 2
    assert len(result.data[0].embedding) == 384
    assert result.usage.prompt_tokens > 0


def test_bad_input_is_a_400_that_says_what_to_fix(engine, web):
    d = deploy([engine.url])
    client = _client(web, d.secret)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="chat", messages=[], max_tokens=4)
    assert "'messages'" in str(info.value)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}], max_tokens=5000
        )
    assert "context window" in str(info.value)
    with pytest.raises(openai.AuthenticationError):
        _client(web, "sb-aaaaaaaaaaaa-" + "x" * 30).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}]
        )


def test_metrics_count_requests_tokens_and_rejections_with_bounded_labels(engine, web):
    import urllib.request

    d = deploy([engine.url], key_kwargs={"rpm_limit": 1})
    client = _client(web, d.secret)
    client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}], max_tokens=3)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}], max_tokens=3
        )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="no-such-endpoint-xyz", messages=[{"role": "user", "content": "x"}]
        )
    with urllib.request.urlopen(f"{web.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'switchboard_gateway_requests_total{endpoint="chat",release="chat-v1",status="ok"}' in text
    assert 'switchboard_gateway_requests_total{endpoint="chat",release="chat-v1",status="rejected"}' in text
    assert 'switchboard_gateway_rejections_total{reason="rate_limited"}' in text
    assert "switchboard_gateway_ttft_seconds_bucket" in text
    assert 'switchboard_gateway_tokens_total{direction="out",endpoint="chat"}' in text
    assert "no-such-endpoint-xyz" not in text  # a client's made-up name never becomes a label
