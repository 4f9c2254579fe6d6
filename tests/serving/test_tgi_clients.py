"""huggingface_hub.InferenceClient against the gateway's TGI-compatible routes (real engine behind)."""

from __future__ import annotations

import asyncio

import pytest
from huggingface_hub import AsyncInferenceClient, InferenceClient

from tests.serving.conftest import deploy

pytestmark = pytest.mark.django_db(transaction=True)


def test_inference_client_generates_and_streams_through_the_endpoint(engine, web):
    d = deploy([engine.url])
    client = InferenceClient(base_url=f"{web.url}/endpoints/chat", api_key=d.secret)
    output = client.text_generation("def add(a, b):", max_new_tokens=6, details=True)
    assert output.details.generated_tokens == 6
    assert output.details.finish_reason == "length"
    tokens = list(client.text_generation("import sys", max_new_tokens=5, stream=True, details=True))
    assert len(tokens) == 5
    assert tokens[-1].details.finish_reason == "length"
    assert tokens[-1].generated_text == "".join(t.token.text for t in tokens if not t.token.special)


def test_inference_client_chat_stream_under_the_endpoint_path(engine, web):
    d = deploy([engine.url])
    client = InferenceClient(base_url=f"{web.url}/endpoints/chat", api_key=d.secret)
    chunks = list(client.chat_completion([{"role": "user", "content": "hello"}], max_tokens=4, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_async_inference_client_and_native_generate_route(engine, web):
    d = deploy([engine.url])

    async def run() -> str:
        client = AsyncInferenceClient(base_url=f"{web.url}/endpoints/chat", api_key=d.secret)
        return await client.text_generation("hello", max_new_tokens=3)

    assert asyncio.run(run())
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{web.url}/endpoints/chat/generate",
        method="POST",
        data=json.dumps({"inputs": "x = 1", "parameters": {"max_new_tokens": 3, "details": True}}).encode(),
        headers={"Authorization": f"Bearer {d.secret}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
        assert response.headers["x-switchboard-release"] == "chat-v1"
    assert body["details"]["generated_tokens"] == 3
