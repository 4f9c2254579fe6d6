"""Failover: a replica killed mid-run, and fallback from a TGI-protocol backend to a hosted
OpenAI-compatible one (the engine's own /v1 stands in for the hosted API)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from serving.engine.launcher import EngineProcess, free_port, spawn_engine
from serving.models import UsageRecord
from tests.serving.conftest import ENGINE_ARGS, actor, deploy, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def engine_pair() -> Iterator[list[EngineProcess]]:
    engines = [spawn_engine("default", extra_args=ENGINE_ARGS) for _ in range(2)]
    yield engines
    for engine in engines:
        engine.stop()


async def _stream(
    session: aiohttp.ClientSession, url: str, secret: str, started: asyncio.Event, max_tokens: int
) -> dict:
    """Reads one SSE stream to its end; returns what arrived and how it ended."""
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "tell me a long story"}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    out: dict[str, Any] = {"tokens": 0, "error": None, "done": False, "replica": "", "request_id": ""}
    async with session.post(
        f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"}
    ) as r:
        out["replica"], out["request_id"] = r.headers["x-switchboard-replica"], r.headers["x-request-id"]
        async for raw in r.content:
            line = raw.strip()
            if line == b"data: [DONE]":
                out["done"] = True
            elif line.startswith(b"data: "):
                event = json.loads(line[6:])
                if "error" in event:
                    out["error"] = event["error"]
                elif event.get("choices") and event["choices"][0]["delta"].get("content"):
                    out["tokens"] += 1
                    started.set()
    return out


def test_killed_replica_cuts_its_streams_with_an_error_and_new_requests_go_elsewhere(
    engine_pair, web, celery_worker_process
):
    victim, survivor = engine_pair
    d = deploy([victim.url, survivor.url])
    victim_replica = d.backend.replicas.get(url=victim.url).pk

    async def scenario() -> tuple[list[dict], list[int]]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            events = [asyncio.Event() for _ in range(6)]
            streams = [asyncio.create_task(_stream(session, web.url, d.secret, e, 700)) for e in events]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout=60)
            os.kill(victim.pid, signal.SIGKILL)
            finished = await asyncio.gather(*streams)
            after = []
            for _ in range(8):
                body = {"model": "chat", "messages": [{"role": "user", "content": "again"}], "max_tokens": 3}
                async with session.post(
                    f"{web.url}/v1/chat/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {d.secret}"},
                ) as r:
                    after.append(r.status)
            return finished, after

    finished, after = asyncio.run(scenario())
    on_victim = [s for s in finished if s["replica"].endswith(f"/{victim_replica}")]
    on_survivor = [s for s in finished if not s["replica"].endswith(f"/{victim_replica}")]
    assert on_victim and on_survivor, "least-outstanding routing should have spread six streams over both"
    assert all(s["error"] is not None and not s["done"] for s in on_victim)
    assert all(s["done"] and s["error"] is None for s in on_survivor)
    assert after == [200] * 8
    cut = on_victim[0]
    record = wait_for(lambda: UsageRecord.objects.filter(request_id=cut["request_id"]).first())
    assert record is not None and record.finish_reason == "error" and record.status == "error"
    assert 0 < record.tokens_out < 700


def test_fallback_from_a_dead_tgi_backend_to_a_hosted_openai_compatible_one(engine, web):
    from controlplane.services.backends import ReplicaSpec, backend_create
    from controlplane.services.catalog import model_version_create
    from controlplane.services.endpoints import endpoint_set_fallbacks
    from controlplane.services.releases import release_create

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here: the self-hosted TGI is down
    d = deploy([dead], kind="tgi")
    hosted = backend_create(
        team=d.team,
        name="hosted",
        kind="openai",
        actor=actor(),
        credentials="test-hosted-token",
        replicas=[ReplicaSpec(url=f"{engine.url}/v1")],
    )
    model = model_version_create(
        team=d.team,
        name="hosted-model",
        backend=hosted,
        actor=actor(),
        hf_repo_id="switchboard/demo-random-llama",
        hf_revision="1" * 40,
        context_window=1024,
        served_model_name="hosted-demo",
    )
    fallback = release_create(team=d.team, name="hosted-v1", model_version=model, actor=actor())
    endpoint_set_fallbacks(endpoint=d.endpoint, releases=[fallback], actor=actor())

    async def call(stream: bool) -> tuple[int, str, str]:
        body = {
            "model": "chat",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
            "stream": stream,
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{web.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {d.secret}"}
            ) as r,
        ):
            return r.status, r.headers.get("x-switchboard-release", ""), await r.text()

    status, release, text = asyncio.run(call(stream=False))
    assert (status, release) == (200, "hosted-v1")
    assert json.loads(text)["choices"][0]["message"]["content"]
    status, release, text = asyncio.run(call(stream=True))
    assert (status, release) == (200, "hosted-v1")
    assert text.rstrip().endswith("data: [DONE]")


def test_all_backends_down_is_a_502_not_a_hang(web):
    d = deploy([f"http://127.0.0.1:{free_port()}"], kind="tgi")

    async def call() -> tuple[int, dict]:
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{web.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {d.secret}"}
            ) as r,
        ):
            return r.status, await r.json()

    status, body = asyncio.run(call())
    assert status == 502
    assert body["error"]["code"] == "upstream_error"
