"""Admission (429 at once, never an unbounded queue) and cancellation (a client that leaves frees
its batch row, its KV memory and its permit). Runs against an engine with two permits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from serving.engine.launcher import EngineProcess
from tests.engine.support import metric


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
        yield s


async def metric_async(url: str, name: str, labels: str = "") -> float:
    return await asyncio.to_thread(metric, url, name, labels)


async def wait_for_metric(url: str, name: str, value: float, labels: str = "") -> None:
    """Poll until the gauge/counter reaches `value` (bounded by a count, not asserted on time)."""
    for _ in range(400):
        if await metric_async(url, name, labels) == value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name}{{{labels}}} never reached {value}: {await metric_async(url, name, labels)}")


async def open_stream(session: aiohttp.ClientSession, url: str, max_new_tokens: int = 1000) -> Any:
    body = {"inputs": "Hold the line please", "parameters": {"max_new_tokens": max_new_tokens}}
    response = await session.post(url + "/generate_stream", json=body)
    assert response.status == 200
    first = await response.content.readline()
    assert first.startswith(b"data: {"), first
    return response


async def test_stream_disconnect_frees_batch_row_and_permit(
    session: aiohttp.ClientSession, small_engine: EngineProcess
) -> None:
    url = small_engine.url
    dropped = await metric_async(url, "tgi_request_failure", 'err="dropped"')
    first = await open_stream(session, url)
    second = await open_stream(session, url)
    await wait_for_metric(url, "tgi_batch_current_size", 2)
    second.close()  # the client goes away mid-generation
    await wait_for_metric(url, "tgi_batch_current_size", 1)
    assert await metric_async(url, "tgi_request_failure", 'err="dropped"') == dropped + 1
    # Its permit is back: a new request fits beside the one still streaming.
    async with session.post(
        url + "/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 3}}
    ) as r:
        assert r.status == 200
        assert (await r.json())["generated_text"]
    first.close()
    await wait_for_metric(url, "tgi_batch_current_size", 0)
    await wait_for_metric(url, "tgi_queue_size", 0)


async def test_non_streaming_client_that_disconnects_is_cancelled(
    session: aiohttp.ClientSession, small_engine: EngineProcess
) -> None:
    url = small_engine.url
    dropped = await metric_async(url, "tgi_request_failure", 'err="dropped"')
    body = {"inputs": "Hold the line", "parameters": {"max_new_tokens": 1000}}
    request = asyncio.create_task(session.post(url + "/generate", json=body))
    await wait_for_metric(url, "tgi_batch_current_size", 1)
    request.cancel()
    await asyncio.gather(request, return_exceptions=True)
    await wait_for_metric(url, "tgi_batch_current_size", 0)
    assert await metric_async(url, "tgi_request_failure", 'err="dropped"') == dropped + 1


async def test_overload_answers_429_at_once_while_permits_are_held(
    session: aiohttp.ClientSession, small_engine: EngineProcess
) -> None:
    url = small_engine.url
    overloaded = await metric_async(url, "tgi_request_failure", 'err="overloaded"')
    holders = [await open_stream(session, url) for _ in range(2)]
    async with session.post(
        url + "/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 2}}
    ) as r:
        assert r.status == 429
        assert await r.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
    async with session.post(url + "/generate_stream", json={"inputs": "x", "parameters": {}}) as r:
        assert r.status == 200
        assert await r.read() == b'data: {"error":"Model is overloaded","error_type":"overloaded"}\n\n'
    body = {"messages": [{"role": "user", "content": "x"}], "stream": True}
    async with session.post(url + "/v1/chat/completions", json=body) as r:
        payloads = [line for line in (await r.read()).decode().split("\n\n") if line]
        assert json.loads(payloads[0].removeprefix("data: "))["error"]["message"] == "Model is overloaded"
        assert payloads[-1] == "data: [DONE]"
    # Refused, not queued: nothing waits, and the two holders are still the whole batch.
    assert await metric_async(url, "tgi_queue_size") == 0
    assert await metric_async(url, "tgi_batch_current_size") == 2
    assert await metric_async(url, "tgi_request_failure", 'err="overloaded"') == overloaded + 3
    for holder in holders:
        holder.close()
    await wait_for_metric(url, "tgi_batch_current_size", 0)
