"""WebSocket chat (/ws/chat/) through a real uvicorn web process and a real engine."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import pytest

from serving.models import UsageRecord
from tests.serving.conftest import deploy, engine_metric, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


async def _socket(web_url: str, secret: str | None, *, cookie: str = "") -> tuple[aiohttp.ClientSession, Any]:
    session = aiohttp.ClientSession()
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    if cookie:
        headers["Cookie"] = cookie
    ws = await session.ws_connect(
        f"{web_url.replace('http', 'ws')}/ws/chat/", headers=headers, origin=web_url
    )
    return session, ws


def test_websocket_streams_tokens_and_a_final_frame_with_usage_and_release(engine, web):
    d = deploy([engine.url])

    async def run() -> list[dict]:
        session, ws = await _socket(web.url, d.secret)
        await ws.send_json(
            {
                "type": "request",
                "id": "a",
                "model": "chat",
                "max_tokens": 6,
                "messages": [{"role": "user", "content": "hi"}],
            }
        )
        frames: list[dict] = []
        while not frames or frames[-1]["type"] == "token":
            frames.append(await ws.receive_json(timeout=60))
        await ws.close()
        await session.close()
        return frames

    frames = asyncio.run(run())
    final = frames[-1]
    assert [f["type"] for f in frames[:-1]] == ["token"] * (len(frames) - 1) and len(frames) > 1
    assert final["type"] == "done" and final["finish_reason"] == "length"
    assert final["usage"]["completion_tokens"] == 6 and final["release"] == "chat-v1"
    assert float(final["cost_usd"]) > 0


def test_websocket_cancel_stops_the_upstream_generation(own_engine, web, celery_worker_process):
    d = deploy([own_engine.url])
    dropped_before = engine_metric(own_engine, "tgi_request_failure")

    async def run() -> dict:
        session, ws = await _socket(web.url, d.secret)
        await ws.send_json(
            {
                "type": "request",
                "id": "long",
                "model": "chat",
                "max_tokens": 900,
                "messages": [{"role": "user", "content": "write a novel"}],
            }
        )
        tokens = 0
        while tokens < 5:
            frame = await ws.receive_json(timeout=60)
            tokens += frame["type"] == "token"
        await ws.send_json({"type": "cancel", "id": "long"})
        while (frame := await ws.receive_json(timeout=60))["type"] == "token":
            pass
        await ws.close()
        await session.close()
        return frame

    final = asyncio.run(run())
    assert final["type"] == "cancelled"
    assert 5 <= final["usage"]["completion_tokens"] < 900
    # The engine dropped the request (its client went away) and its batch emptied: it stopped generating.
    assert wait_for(lambda: engine_metric(own_engine, "tgi_request_failure") > dropped_before, timeout=10)
    assert wait_for(lambda: engine_metric(own_engine, "tgi_batch_current_size") == 0, timeout=10)
    record = wait_for(lambda: UsageRecord.objects.filter(request_id=final["request_id"]).first())
    assert record is not None and record.status == "cancelled"
    assert record.tokens_out == final["usage"]["completion_tokens"]


def test_websocket_without_credentials_gets_a_typed_error_and_is_closed(web):
    async def run() -> tuple[dict, Any]:
        session, ws = await _socket(web.url, None)
        frame = await ws.receive_json(timeout=10)
        closing = await ws.receive(timeout=10)
        await session.close()
        return frame, closing

    frame, closing = asyncio.run(run())
    assert frame["type"] == "error" and frame["code"] == "invalid_api_key"
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4401


def _console_cookie(team: Any) -> str:
    """Signs a team member in through Django's session machinery (as the console login does) and
    returns the session cookie a browser would send."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    from controlplane.models import Membership

    user = get_user_model().objects.create_user(username=f"ws-{uuid.uuid4().hex[:8]}", password=None)
    Membership.objects.create(team=team, user=user, role="developer")
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def test_websocket_authenticated_by_a_console_session_acts_for_the_users_team(
    engine, web, celery_worker_process
):
    d = deploy([engine.url])
    cookie = _console_cookie(d.team)

    async def run(cookie: str) -> list[dict]:
        session, ws = await _socket(web.url, None, cookie=cookie)
        await ws.send_json(
            {
                "type": "request",
                "id": "s",
                "model": "chat",
                "max_tokens": 4,
                "messages": [{"role": "user", "content": "hi"}],
            }
        )
        frames: list[dict] = []
        while not frames or frames[-1]["type"] == "token":
            frames.append(await ws.receive_json(timeout=60))
        await ws.close()
        await session.close()
        return frames

    frames = asyncio.run(run(cookie))
    final = frames[-1]
    assert final["type"] == "done" and final["usage"]["completion_tokens"] == 4
    assert final["release"] == "chat-v1"
    record = wait_for(lambda: UsageRecord.objects.filter(request_id=final["request_id"]).first())
    assert record is not None
    assert (record.team_id, record.api_key_id, record.status) == (d.team.pk, None, "ok")
    # A session that is not signed in gets nothing: the same socket with a made-up cookie is refused.
    refused = asyncio.run(_first_frame(web.url, "sessionid=not-a-session"))
    assert refused["type"] == "error" and refused["code"] == "invalid_api_key"


async def _first_frame(web_url: str, cookie: str) -> dict:
    session, ws = await _socket(web_url, None, cookie=cookie)
    frame = await ws.receive_json(timeout=10)
    await session.close()
    return frame
