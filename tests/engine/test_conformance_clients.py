"""The real Python clients against the real engine: huggingface_hub (sync + async) and text-generation.

These are the clients TGI users already have; if they cannot tell the engine from TGI, the
gateway and any existing tooling can use it unchanged.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
import text_generation
from huggingface_hub import AsyncInferenceClient, InferenceClient
from huggingface_hub.errors import HfHubHTTPError, OverloadedError, UnknownError, ValidationError

from serving.engine.launcher import EngineProcess

# text-generation 0.7.0 calls pydantic's deprecated .dict(); its noise is not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:text_generation.*")

CHAT = [{"role": "user", "content": "Which line should I connect you to?"}]


@pytest.fixture(scope="module")
def client(engine_url: str) -> InferenceClient:
    return InferenceClient(base_url=engine_url, timeout=60)


@pytest.fixture(scope="module")
def tgi_client(engine_url: str) -> text_generation.Client:
    return text_generation.Client(engine_url, timeout=60)


# ----- huggingface_hub, sync ------------------------------------------------------------------
def test_text_generation_returns_full_text_on_compat_route(client: InferenceClient) -> None:
    text = client.text_generation("Hello operator", max_new_tokens=6)
    detailed = client.text_generation(
        "Hello operator", max_new_tokens=6, details=True, return_full_text=False
    )
    # POST / defaults return_full_text to true for a model without a Hub pipeline tag, as TGI does.
    assert text == "Hello operator" + detailed.generated_text
    assert detailed.details.finish_reason == "length"
    assert detailed.details.generated_tokens == 6
    assert len(detailed.details.tokens) == 6
    assert detailed.details.seed is None  # greedy: no seed reported
    assert all(t.logprob <= 0 for t in detailed.details.tokens)


def test_text_generation_stream_yields_each_token_then_the_final_text(client: InferenceClient) -> None:
    events = list(
        client.text_generation(
            "Hello operator", max_new_tokens=5, stream=True, details=True, return_full_text=False
        )
    )
    plain = list(client.text_generation("Hello operator", max_new_tokens=5, stream=True))
    assert [e.index for e in events] == [1, 2, 3, 4, 5]
    assert all(e.generated_text is None and e.details is None for e in events[:-1])
    final = events[-1]
    assert final.details.finish_reason == "length" and final.details.generated_tokens == 5
    assert final.generated_text == "".join(e.token.text for e in events)
    assert plain == [e.token.text for e in events]


def test_text_generation_seeded_sampling_is_reproducible(client: InferenceClient) -> None:
    first = client.text_generation("Hello", max_new_tokens=8, do_sample=True, seed=42, details=True, top_k=50)
    again = client.text_generation("Hello", max_new_tokens=8, do_sample=True, seed=42, details=True, top_k=50)
    other = client.text_generation("Hello", max_new_tokens=8, do_sample=True, seed=7, details=True, top_k=50)
    ids = [t.id for t in first.details.tokens]
    assert ids == [t.id for t in again.details.tokens]
    assert ids != [t.id for t in other.details.tokens]
    assert first.details.seed == 42


def test_text_generation_validation_error_is_typed(client: InferenceClient) -> None:
    with pytest.raises(ValidationError, match="`temperature` must be strictly positive"):
        client.text_generation("Hello", max_new_tokens=5, temperature=-1.0)
    with pytest.raises(ValidationError, match="`top_k` must be strictly positive"):
        list(client.text_generation("Hello", max_new_tokens=5, top_k=-3, stream=True))


def test_chat_completion_non_stream(client: InferenceClient) -> None:
    out = client.chat_completion(CHAT, max_tokens=7, temperature=0.0)
    assert out.object == "chat.completion"
    assert out.model == "dummy"  # the client sends model "dummy"; TGI echoes unknown model names
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 7
    assert out.usage.total_tokens == out.usage.prompt_tokens + 7
    assert out.choices[0].message.content


def test_chat_completion_stream_with_usage_chunk(client: InferenceClient) -> None:
    chunks = list(
        client.chat_completion(
            CHAT, max_tokens=6, temperature=0.0, stream=True, stream_options={"include_usage": True}
        )
    )
    token_chunks, usage_chunk = chunks[:-1], chunks[-1]
    assert len(token_chunks) == 6
    assert all(c.choices[0].delta.role == "assistant" for c in token_chunks)
    assert [c.choices[0].finish_reason for c in token_chunks] == [None] * 5 + ["length"]
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == 6
    streamed = "".join(c.choices[0].delta.content for c in token_chunks)
    assert streamed == client.chat_completion(CHAT, max_tokens=6, temperature=0.0).choices[0].message.content


def test_chat_completion_stream_without_include_usage_has_no_usage_chunk(client: InferenceClient) -> None:
    chunks = list(client.chat_completion(CHAT, max_tokens=3, temperature=0.0, stream=True))
    assert len(chunks) == 3
    assert all(c.choices for c in chunks)


def test_chat_stream_validation_error_arrives_in_openai_shape(client: InferenceClient) -> None:
    # TGI sends {"error":{"message","http_status_code"}} inside chat streams, with no error_type,
    # so huggingface_hub raises its UnknownError carrying the message.
    with pytest.raises(UnknownError, match=re.escape("`top_p` must be > 0.0 and < 1.0")):
        list(client.chat_completion(CHAT, max_tokens=3, top_p=1.5, stream=True))
    # Outside a stream it is a plain 422 with TGI's body; huggingface_hub does not type chat errors.
    with pytest.raises(HfHubHTTPError) as raised:
        client.chat_completion(CHAT, max_tokens=3, top_p=1.5)
    assert raised.value.response.status_code == 422
    assert raised.value.response.json() == {
        "error": "Input validation error: `top_p` must be > 0.0 and < 1.0",
        "error_type": "validation",
    }


def test_info_and_health_through_hf_inference_provider(engine_url: str) -> None:
    client = InferenceClient(base_url=engine_url, provider="hf-inference")
    info = client.get_endpoint_info()
    assert info["model_id"] == "switchboard/demo-random-llama"
    assert info["demo_model"] is True and "random" in info["note"].lower()
    assert client.health_check() is True


# ----- huggingface_hub, async -----------------------------------------------------------------
async def test_async_client_generation_stream_and_chat(engine_url: str) -> None:
    client = AsyncInferenceClient(base_url=engine_url, timeout=60)
    text = await client.text_generation("Hello operator", max_new_tokens=4, return_full_text=False)
    stream = await client.text_generation("Hello operator", max_new_tokens=4, stream=True)
    streamed = [token async for token in stream]
    assert "".join(streamed) == text
    chat = await client.chat_completion(CHAT, max_tokens=4, temperature=0.0)
    chunks = [
        c
        async for c in await client.chat_completion(
            CHAT, max_tokens=4, temperature=0.0, stream=True, stream_options={"include_usage": True}
        )
    ]
    assert "".join(c.choices[0].delta.content for c in chunks[:-1]) == chat.choices[0].message.content
    assert chunks[-1].usage.total_tokens == chat.usage.total_tokens
    with pytest.raises(ValidationError, match=re.escape("`typical_p` must be > 0.0 and < 1.0")):
        await client.text_generation("Hello", max_new_tokens=3, typical_p=1.0)


async def test_async_client_gets_overloaded_error_when_permits_are_taken(small_engine: EngineProcess) -> None:
    client = AsyncInferenceClient(base_url=small_engine.url, timeout=60)
    first_tokens = asyncio.Event()
    started = 0

    async def hold_a_permit() -> int:
        nonlocal started
        count = 0
        async for _ in await client.text_generation("Hold the line", max_new_tokens=300, stream=True):
            count += 1
            if count == 1:
                started += 1
                if started == 2:
                    first_tokens.set()
        return count

    holders = [asyncio.create_task(hold_a_permit()) for _ in range(2)]
    await asyncio.wait_for(first_tokens.wait(), 60)
    with pytest.raises(OverloadedError, match="Model is overloaded"):
        await client.text_generation("one more", max_new_tokens=2)
    with pytest.raises(OverloadedError, match="Model is overloaded"):
        async for _ in await client.text_generation("one more", max_new_tokens=2, stream=True):
            pass
    assert await asyncio.gather(*holders) == [300, 300]


# ----- text-generation 0.7.0 --------------------------------------------------------------------
def test_text_generation_client_generate_and_stream(tgi_client: text_generation.Client) -> None:
    response = tgi_client.generate("Hello operator", max_new_tokens=5)
    assert response.details.generated_tokens == 5
    assert response.details.finish_reason.value == "length"
    streamed = list(tgi_client.generate_stream("Hello operator", max_new_tokens=5))
    assert [s.token.id for s in streamed] == [t.id for t in response.details.tokens]
    assert streamed[-1].generated_text == response.generated_text
    assert streamed[-1].details.generated_tokens == 5


def test_text_generation_client_stop_sequence(tgi_client: text_generation.Client) -> None:
    baseline = tgi_client.generate("Hello operator", max_new_tokens=8)
    stop = baseline.details.tokens[2].text
    stopped = tgi_client.generate("Hello operator", max_new_tokens=8, stop_sequences=[stop])
    assert stopped.details.finish_reason.value == "stop_sequence"
    assert stopped.generated_text.endswith(stop)  # TGI keeps the stop sequence in the text
    assert stopped.details.generated_tokens <= 3


def test_text_generation_client_typed_errors(tgi_client: text_generation.Client) -> None:
    with pytest.raises(text_generation.errors.ValidationError, match="must be <= 1024"):
        tgi_client.generate("Hello", max_new_tokens=5000)
    with pytest.raises(text_generation.errors.ValidationError, match="must be <= 1024"):
        list(tgi_client.generate_stream("Hello", max_new_tokens=5000))


async def test_text_generation_async_client_overloaded(small_engine: EngineProcess) -> None:
    client = text_generation.AsyncClient(small_engine.url, timeout=60)
    holders = [asyncio.create_task(client.generate("Hold the line", max_new_tokens=300)) for _ in range(2)]
    await _wait_for_batch(small_engine.url, size=2)
    with pytest.raises(text_generation.errors.OverloadedError):
        await client.generate("one more", max_new_tokens=2)
    results = await asyncio.gather(*holders)
    assert [r.details.generated_tokens for r in results] == [300, 300]


async def _wait_for_batch(url: str, size: int) -> None:
    from tests.engine.support import metric

    for _ in range(600):
        if await asyncio.to_thread(metric, url, "tgi_batch_current_size") >= size:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"batch never reached {size}")


# ----- openai SDK (what the gateway's OpenAI-compatible surface promises) --------------------------
def test_openai_sdk_chat_and_completions(engine_url: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=engine_url + "/v1", api_key="unused")
    messages: list[Any] = CHAT
    chat = client.chat.completions.create(model="tgi", messages=messages, max_tokens=5, temperature=0)
    assert chat.model == "switchboard/demo-random-llama"
    assert chat.usage is not None and chat.usage.completion_tokens == 5
    chunks = list(
        client.chat.completions.create(
            model="tgi",
            messages=messages,
            max_tokens=5,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == chat.choices[0].message.content
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == chat.usage.total_tokens
    completion = client.completions.create(model="tgi", prompt="Hello operator", max_tokens=4, temperature=0)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 4
