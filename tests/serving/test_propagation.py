"""Control-plane changes reach every web process within a second (pub/sub invalidation of the
in-process caches), without a database query per request in between."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.serving.conftest import actor, deploy

pytestmark = pytest.mark.django_db(transaction=True)


async def _ask(url: str, secret: str, model: str = "chat") -> tuple[int, str]:
    body = {"model": model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"}
        ) as r,
    ):
        await r.read()
        return r.status, r.headers.get("x-switchboard-release", "")


def test_revoked_key_is_refused_by_every_process_within_a_second(engine, two_webs):
    from controlplane.services.keys import api_key_revoke

    d = deploy([engine.url])
    for web in two_webs:  # both processes now hold the principal in their cache
        assert asyncio.run(_ask(web.url, d.secret))[0] == 200
    api_key_revoke(key=d.key, actor=actor())
    time.sleep(1.0)
    assert [asyncio.run(_ask(web.url, d.secret))[0] for web in two_webs] == [401, 401]


def test_endpoint_switch_is_served_by_a_second_process_within_a_second(engine, two_webs):
    from controlplane.services.endpoints import TrafficEntry, endpoint_set_traffic
    from controlplane.services.releases import release_create

    d = deploy([engine.url])
    for web in two_webs:
        assert asyncio.run(_ask(web.url, d.secret)) == (200, "chat-v1")
    v2 = release_create(team=d.team, name="chat-v2", model_version=d.model, actor=actor())
    endpoint_set_traffic(endpoint=d.endpoint, traffic=[TrafficEntry(v2, 100)], actor=actor())
    time.sleep(1.0)
    assert [asyncio.run(_ask(web.url, d.secret)) for web in two_webs] == [(200, "chat-v2")] * 2


def test_traffic_split_is_sticky_per_user(engine, web):
    import openai

    from controlplane.services.endpoints import TrafficEntry, endpoint_set_traffic
    from controlplane.services.releases import release_create

    d = deploy([engine.url])
    v2 = release_create(team=d.team, name="chat-v2", model_version=d.model, actor=actor())
    endpoint_set_traffic(
        endpoint=d.endpoint, traffic=[TrafficEntry(d.release, 50), TrafficEntry(v2, 50)], actor=actor()
    )
    time.sleep(1.0)
    client = openai.OpenAI(base_url=f"{web.url}/v1", api_key=d.secret, max_retries=0)

    def release_for(user: str) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "x"}], max_tokens=1, user=user
        )
        return raw.headers["x-switchboard-release"]

    users = [f"user-{i}" for i in range(12)]
    first = {u: release_for(u) for u in users}
    assert {u: release_for(u) for u in users} == first  # the same arm every time
    assert set(first.values()) == {"chat-v1", "chat-v2"}  # and both arms get users
