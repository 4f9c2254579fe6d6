"""Helpers shared by the engine tests (kept out of conftest so they can be imported)."""

from __future__ import annotations

import re

import requests


def metric(url: str, name: str, labels: str = "") -> float:
    """One sample from /metrics, e.g. metric(url, "tgi_request_failure", 'err="dropped"')."""
    text = requests.get(url + "/metrics", timeout=10).text
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == wanted:
            return float(value)
    return 0.0


def sse_payloads(raw: bytes) -> list[str]:
    """The `data: ` payloads of an SSE body, asserting axum's exact framing on the way."""
    text = raw.decode()
    assert text.endswith("\n\n"), "every SSE event ends with a blank line"
    events = [e for e in text.split("\n\n") if e]
    for event in events:
        assert re.fullmatch(r"data: .+|:", event, flags=re.DOTALL), f"bad SSE event: {event!r}"
    return [e.removeprefix("data: ") for e in events if e != ":"]
