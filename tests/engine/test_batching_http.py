"""Continuous batching seen from outside: concurrent HTTP streams against the real engine.

Each request's tokens are compared with the same request sent alone. Overlap between streams is
checked by the order in which events arrive (never by timings): a request that joined a running
batch produced its first token before an earlier request finished.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from tests.engine.support import metric

_sequence = itertools.count()


@dataclass
class Stream:
    ids: list[int] = field(default_factory=list)
    first_at: int = -1  # position in the global order of received events
    last_at: int = -1
    text: str = ""


async def stream_generate(
    session: aiohttp.ClientSession, url: str, inputs: str, started: asyncio.Event | None = None, **params: Any
) -> Stream:
    body = {"inputs": inputs, "parameters": {"details": True, **params}}
    result = Stream()
    async with session.post(url + "/generate_stream", json=body) as response:
        assert response.status == 200
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            event = json.loads(line.removeprefix("data: "))
            assert "error" not in event, event
            order = next(_sequence)
            result.first_at = order if result.first_at < 0 else result.first_at
            result.last_at = order
            result.ids.append(event["token"]["id"])
            if started is not None and len(result.ids) == 3:
                started.set()
            if event["generated_text"] is not None:
                result.text = event["generated_text"]
    return result


PROMPTS = [
    "Hello operator, please connect me",
    "The switchboard connects callers to the line they ask for.",
    "def generate(prompt: str) -> str:",
    "1, 2, 3, 4, 5",
    "What is the capital of France?",
    "A good operator keeps the queue short",
    "Language models answer requests one token at a time.",
    "When every line is busy, new callers wait in a queue",
]
LONG_PROMPT = "An operator listens, plugs a cord into the right jack, and rings the other end. " * 30


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
        yield s


async def solo(session: aiohttp.ClientSession, url: str, inputs: str, **params: Any) -> list[int]:
    return (await stream_generate(session, url, inputs, **params)).ids


async def test_all_at_once_matches_solo_runs(session: aiohttp.ClientSession, engine_url: str) -> None:
    alone = [await solo(session, engine_url, p, max_new_tokens=24) for p in PROMPTS]
    together = await asyncio.gather(
        *(stream_generate(session, engine_url, p, max_new_tokens=24) for p in PROMPTS)
    )
    assert [s.ids for s in together] == alone
    first_finish = min(s.last_at for s in together)
    assert sum(s.first_at < first_finish for s in together) >= 2, "streams must overlap"


async def test_requests_joining_while_others_decode_match_solo_runs(
    session: aiohttp.ClientSession, engine_url: str
) -> None:
    early, late = PROMPTS[:3], PROMPTS[3:6]
    alone_early = [await solo(session, engine_url, p, max_new_tokens=60) for p in early]
    alone_late = [await solo(session, engine_url, p, max_new_tokens=20) for p in late]
    concat_before = metric(engine_url, "tgi_batch_concat", 'reason="backpressure"') + metric(
        engine_url, "tgi_batch_concat", 'reason="wait_exceeded"'
    )
    started = asyncio.Event()
    early_tasks = [
        asyncio.create_task(stream_generate(session, engine_url, p, started, max_new_tokens=60))
        for p in early
    ]
    await started.wait()  # the early batch is decoding
    late_streams = await asyncio.gather(
        *(stream_generate(session, engine_url, p, max_new_tokens=20) for p in late)
    )
    early_streams = await asyncio.gather(*early_tasks)
    assert [s.ids for s in early_streams] == alone_early
    assert [s.ids for s in late_streams] == alone_late
    # The late requests ran inside the early batch, not after it.
    assert all(s.last_at < max(e.last_at for e in early_streams) for s in late_streams)
    concat_after = metric(engine_url, "tgi_batch_concat", 'reason="backpressure"') + metric(
        engine_url, "tgi_batch_concat", 'reason="wait_exceeded"'
    )
    assert concat_after > concat_before


async def test_long_prompt_joining_short_ones_matches_solo_runs(
    session: aiohttp.ClientSession, engine_url: str
) -> None:
    short = PROMPTS[:4]
    alone_short = [await solo(session, engine_url, p, max_new_tokens=50) for p in short]
    alone_long = await solo(session, engine_url, LONG_PROMPT, max_new_tokens=15)
    started = asyncio.Event()
    tasks = [
        asyncio.create_task(stream_generate(session, engine_url, p, started, max_new_tokens=50))
        for p in short
    ]
    await started.wait()
    long_stream = await stream_generate(session, engine_url, LONG_PROMPT, max_new_tokens=15)
    short_streams = await asyncio.gather(*tasks)
    assert long_stream.ids == alone_long
    assert [s.ids for s in short_streams] == alone_short
    assert long_stream.last_at < max(s.last_at for s in short_streams)


async def test_seeded_sampling_matches_alone_and_batched(
    session: aiohttp.ClientSession, engine_url: str
) -> None:
    params = {"max_new_tokens": 16, "do_sample": True, "seed": 2026, "temperature": 0.8, "top_p": 0.9}
    alone = await solo(session, engine_url, PROMPTS[0], **params)
    together = await asyncio.gather(
        stream_generate(session, engine_url, PROMPTS[0], **params),
        *(stream_generate(session, engine_url, p, max_new_tokens=30, do_sample=True) for p in PROMPTS[1:5]),
    )
    assert together[0].ids == alone
