"""SSE keep-alive: a silent request gets a `None` marker (sent as `:` comment) per interval."""

from __future__ import annotations

import asyncio

from serving.engine.http import KEEPALIVE
from serving.engine.params import ErrorEvent, Event
from serving.engine.service import KeepAlive


async def test_keepalive_marks_silence_and_resets_on_events() -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event | None] = asyncio.Queue()
    keepalive = KeepAlive(loop, queue, interval=0.05)
    try:
        assert await asyncio.wait_for(queue.get(), 5) is None
        queue.put_nowait(ErrorEvent("x"))
        assert isinstance(await queue.get(), ErrorEvent)
        keepalive.seen()
        assert await asyncio.wait_for(queue.get(), 5) is None  # silence again after the event
    finally:
        keepalive.stop()
    await asyncio.sleep(0.15)
    assert queue.empty()  # stopped: no more markers
    assert KEEPALIVE == b":\n\n"
