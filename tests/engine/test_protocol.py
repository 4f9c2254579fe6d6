"""TGI's wire protocol, byte for byte where it matters (see shared/reference/tgi-protocol.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from serving.engine.schemas import GenerateRequest
from tests.engine.support import metric, sse_payloads

TIMEOUT = 60


def post(url: str, path: str, body: Any, **kwargs: Any) -> requests.Response:
    return requests.post(url + path, json=body, timeout=TIMEOUT, **kwargs)


def generate(url: str, inputs: str = "Hello operator", **parameters: Any) -> dict[str, Any]:
    response = post(url, "/generate", {"inputs": inputs, "parameters": parameters})
    assert response.status_code == 200, response.text
    return response.json()


def token_ids(body: dict[str, Any]) -> list[int]:
    return [t["id"] for t in body["details"]["tokens"]]


# ----- routes and shapes ---------------------------------------------------------------------------
def test_compat_route_returns_a_list_with_the_prompt_prepended(engine_url: str) -> None:
    compat = post(engine_url, "/", {"inputs": "Hello", "parameters": {"max_new_tokens": 4}})
    plain = generate(engine_url, "Hello", max_new_tokens=4)
    assert compat.status_code == 200
    assert isinstance(compat.json(), list) and len(compat.json()) == 1
    assert compat.json()[0]["generated_text"] == "Hello" + plain["generated_text"]
    assert "details" not in plain  # left out entirely unless asked for


def test_compat_route_streams_when_asked(engine_url: str) -> None:
    response = post(engine_url, "/", {"inputs": "Hello", "parameters": {"max_new_tokens": 3}, "stream": True})
    events = [json.loads(p) for p in sse_payloads(response.content)]
    assert [e["index"] for e in events] == [1, 2, 3]
    assert events[-1]["generated_text"].startswith("Hello")


def test_missing_parameters_mean_sampling_but_empty_parameters_mean_greedy() -> None:
    # TGI's serde quirk, copied: default_parameters() samples, the bool default does not.
    assert GenerateRequest.model_validate({"inputs": "x"}).parameters.do_sample is True
    assert GenerateRequest.model_validate({"inputs": "x", "parameters": {}}).parameters.do_sample is False


def test_generate_stream_sse_framing_and_headers(engine_url: str) -> None:
    response = post(engine_url, "/generate_stream", {"inputs": "Hello", "parameters": {"max_new_tokens": 3}})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.content.startswith(b'data: {"index":1,"token":{"id":')
    payloads = sse_payloads(response.content)
    assert "[DONE]" not in payloads  # /generate_stream ends without [DONE]
    events = [json.loads(p) for p in payloads]
    assert list(events[0]) == ["index", "token", "generated_text", "details"]
    assert events[-1]["details"] is None  # details only when asked for


def test_generate_details_and_timing_headers(engine_url: str) -> None:
    response = post(
        engine_url, "/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 5, "details": True}}
    )
    body = response.json()
    assert set(body["details"]) == {"finish_reason", "generated_tokens", "seed", "prefill", "tokens"}
    assert body["details"]["prefill"] == []
    assert [set(t) for t in body["details"]["tokens"]] == [{"id", "text", "logprob", "special"}] * 5
    for header in ("x-compute-time", "x-total-time", "x-validation-time", "x-queue-time", "x-inference-time"):
        assert header in response.headers
    assert response.headers["x-generated-tokens"] == "5"
    assert response.headers["x-compute-type"] == "cpu"
    assert response.headers["x-prompt-tokens"] == str(len(requests_tokenize(engine_url, "Hello")))


def test_decoder_input_details_returns_prompt_logprobs(engine_url: str) -> None:
    body = generate(engine_url, "Hello operator, line two", max_new_tokens=2, decoder_input_details=True)
    prefill = body["details"]["prefill"]
    assert [t["id"] for t in prefill] == [
        t["id"] for t in requests_tokenize(engine_url, "Hello operator, line two")
    ]
    assert prefill[0]["logprob"] is None  # nothing precedes the first token
    assert all(t["logprob"] < 0 for t in prefill[1:])


def test_top_n_tokens_lists_the_best_alternatives(engine_url: str) -> None:
    body = generate(engine_url, max_new_tokens=3, details=True, top_n_tokens=4)
    tops = body["details"]["top_tokens"]
    assert [len(t) for t in tops] == [4, 4, 4]
    for chosen, top in zip(body["details"]["tokens"], tops, strict=True):
        assert top[0]["id"] == chosen["id"]  # greedy picks the best one
        logprobs = [t["logprob"] for t in top]
        assert logprobs == sorted(logprobs, reverse=True)


def requests_tokenize(url: str, text: str) -> list[dict[str, Any]]:
    response = post(url, "/tokenize", {"inputs": text})
    assert response.status_code == 200
    return response.json()


def test_tokenize_gives_byte_offsets_into_the_input(engine_url: str) -> None:
    text = "héllo wörld"
    tokens = requests_tokenize(engine_url, text)
    assert tokens[0] == {"id": 0, "text": "", "start": 0, "stop": 0}  # the BOS token
    raw = text.encode()
    assert tokens[-1]["stop"] == len(raw)  # bytes, not characters
    for t in tokens[1:]:
        assert raw[t["start"] : t["stop"]].decode() == t["text"]


def test_info_models_and_health(engine_url: str) -> None:
    info = requests.get(engine_url + "/info", timeout=TIMEOUT).json()
    for key in (
        "model_id",
        "max_concurrent_requests",
        "max_best_of",
        "max_stop_sequences",
        "max_input_tokens",
        "max_total_tokens",
        "validation_workers",
        "max_client_batch_size",
        "router",
        "version",
    ):
        assert key in info
    assert info["max_total_tokens"] == 1024 and info["max_input_tokens"] == 1023
    models = requests.get(engine_url + "/v1/models", timeout=TIMEOUT).json()
    assert models["data"][0]["id"] == info["model_id"] and models["object"] == "list"
    for path in ("/health", "/ping", "/"):
        response = requests.get(engine_url + path, timeout=TIMEOUT)
        assert response.status_code == 200 and response.content == b""


def test_metrics_use_tgi_names_without_total_suffix(engine_url: str) -> None:
    before = metric(engine_url, "tgi_request_count")
    generate(engine_url, max_new_tokens=2)
    text = requests.get(engine_url + "/metrics", timeout=TIMEOUT).text
    assert metric(engine_url, "tgi_request_count") == before + 1
    assert "# TYPE tgi_request_count counter" in text and "tgi_request_count_total" not in text
    for name in (
        "tgi_request_success",
        "tgi_batch_current_size",
        "tgi_queue_size",
        "tgi_batch_max_total_tokens",
        "tgi_request_duration_bucket",
        "tgi_request_generated_tokens_count",
        'tgi_batch_inference_count{method="decode"}',
        'tgi_batch_forward_duration_sum{method="prefill"}',
    ):
        assert name in text, name


# ----- stopping and sampling -----------------------------------------------------------------------
def test_stop_sequence_ends_generation_and_stays_in_text(engine_url: str) -> None:
    baseline = generate(engine_url, max_new_tokens=10, details=True)
    stop = baseline["details"]["tokens"][3]["text"]
    stopped = generate(engine_url, max_new_tokens=10, details=True, stop=[stop])
    assert stopped["details"]["finish_reason"] == "stop_sequence"
    assert stopped["generated_text"].endswith(stop)
    assert baseline["generated_text"].startswith(stopped["generated_text"])


def _reuses_a_seen_token(prompt_ids: list[int], generated: list[int]) -> bool:
    seen = set(prompt_ids)
    for token in generated:
        if token in seen:
            return True
        seen.add(token)
    return False


def test_repetition_and_frequency_penalties_change_greedy_output(engine_url: str) -> None:
    prompt = (
        "The switchboard connects callers to the line they ask for. "
        "An operator listens, plugs a cord into the right jack"
    )
    prompt_ids = [t["id"] for t in requests_tokenize(engine_url, prompt)]
    plain = token_ids(generate(engine_url, prompt, max_new_tokens=40, details=True))
    repeated = token_ids(
        generate(engine_url, prompt, max_new_tokens=40, details=True, repetition_penalty=50.0)
    )
    frequent = token_ids(generate(engine_url, prompt, max_new_tokens=40, details=True, frequency_penalty=2.0))
    assert _reuses_a_seen_token(prompt_ids, plain), "precondition: plain greedy output reuses a token"
    # A huge repetition penalty makes every token already in the sequence a bad choice.
    assert not _reuses_a_seen_token(prompt_ids, repeated)
    assert frequent != plain


def test_warpers_that_keep_one_token_reduce_sampling_to_greedy(engine_url: str) -> None:
    greedy = token_ids(generate(engine_url, max_new_tokens=8, details=True))
    for warper in ({"top_k": 1}, {"top_p": 0.001}):
        sampled = generate(engine_url, max_new_tokens=8, details=True, do_sample=True, seed=3, **warper)
        assert token_ids(sampled) == greedy, warper
        assert sampled["details"]["seed"] == 3


def test_logprobs_are_reported_after_temperature(engine_url: str) -> None:
    # At temperature 1000 the 4096-token distribution is almost uniform: log(1/4096) = -8.318.
    hot = generate(engine_url, max_new_tokens=4, details=True, do_sample=True, seed=1, temperature=1000.0)
    cold = generate(engine_url, max_new_tokens=4, details=True)
    assert all(abs(t["logprob"] + 8.318) < 0.05 for t in hot["details"]["tokens"])
    assert all(t["logprob"] > -8.0 for t in cold["details"]["tokens"])


def test_typical_p_keeps_the_most_typical_tokens(engine_url: str) -> None:
    def sample(seed: int, typical_p: float) -> list[int]:
        return token_ids(generate(engine_url, max_new_tokens=8, details=True, seed=seed, typical_p=typical_p))

    # A tiny mass leaves one candidate per step, so the seed no longer matters; a large one does.
    assert sample(3, 1e-6) == sample(4, 1e-6)
    assert sample(3, 0.99) != sample(4, 0.99)


def test_sampling_without_seed_reports_the_random_seed(engine_url: str) -> None:
    first = generate(engine_url, max_new_tokens=6, details=True, do_sample=True)
    again = generate(
        engine_url, max_new_tokens=6, details=True, do_sample=True, seed=first["details"]["seed"]
    )
    assert isinstance(first["details"]["seed"], int)
    assert token_ids(again) == token_ids(first)


def test_truncate_keeps_the_last_tokens(engine_url: str) -> None:
    long_text = "one two three four five six seven eight nine ten " * 40
    count = len(requests_tokenize(engine_url, long_text))
    body = generate(engine_url, long_text, max_new_tokens=2, truncate=10, decoder_input_details=True)
    assert count > 10
    kept = [t["id"] for t in body["details"]["prefill"]]
    assert kept == [t["id"] for t in requests_tokenize(engine_url, long_text)][-10:]


# ----- errors --------------------------------------------------------------------------------------
VALIDATION_CASES = [
    ({"temperature": 0.0}, "`temperature` must be strictly positive"),
    ({"repetition_penalty": 0.0}, "`repetition_penalty` must be strictly positive"),
    ({"frequency_penalty": 2.5}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
    ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"top_p": 0.0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"typical_p": 1.0}, "`typical_p` must be > 0.0 and < 1.0"),
    ({"top_k": 0}, "`top_k` must be strictly positive"),
    ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
    ({"top_n_tokens": 6}, "`top_n_tokens` must be >= 0 and <= 5. Given: 6"),
    ({"truncate": 0}, "`truncate` must be strictly positive and less than 1023. Given: 0"),
    ({"truncate": 5000}, "`truncate` must be strictly positive and less than 1023. Given: 5000"),
    (
        {"max_new_tokens": 1023},
        "`inputs` tokens + `max_new_tokens` must be <= 1024. "
        "Given: 4 `inputs` tokens and 1023 `max_new_tokens`",
    ),
    ({"best_of": 2, "do_sample": True}, "`best_of` != 1 is not allowed for this endpoint"),
    ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
    ({"grammar": {"type": "json", "value": {"properties": {}}}}, "grammar is not supported"),
    ({"temperature": -1.0, "top_k": 0}, "`temperature` must be strictly positive"),  # first failure wins
]


@pytest.mark.parametrize(("parameters", "message"), VALIDATION_CASES)
def test_each_invalid_parameter_gives_422_with_tgi_message(
    engine_url: str, parameters: dict[str, Any], message: str
) -> None:
    assert len(requests_tokenize(engine_url, "Hello operator")) == 4  # <s> He llo ␣operator
    response = post(
        engine_url,
        "/generate",
        {"inputs": "Hello operator", "parameters": {"max_new_tokens": 3, **parameters}},
    )
    assert response.status_code == 422
    assert response.json() == {"error": f"Input validation error: {message}", "error_type": "validation"}


def test_empty_and_too_long_inputs_are_rejected(engine_url: str) -> None:
    empty = post(engine_url, "/generate", {"inputs": "", "parameters": {"max_new_tokens": 3}})
    assert empty.json()["error"] == "Input validation error: `inputs` cannot be empty"
    long_text = "word " * 1500
    n = len(requests_tokenize(engine_url, long_text))
    too_long = post(engine_url, "/generate", {"inputs": long_text, "parameters": {"max_new_tokens": 1}})
    assert too_long.status_code == 422
    assert too_long.json()["error"] == (
        "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 1024. "
        f"Given: {n} `inputs` tokens and 1 `max_new_tokens`"
    )
    cut = post(
        engine_url, "/generate", {"inputs": long_text, "parameters": {"max_new_tokens": 1, "truncate": 1000}}
    )
    assert cut.status_code == 200


def test_validation_failures_are_counted(engine_url: str) -> None:
    before = metric(engine_url, "tgi_request_failure", 'err="validation"')
    post(engine_url, "/generate", {"inputs": "x", "parameters": {"top_k": 0}})
    assert metric(engine_url, "tgi_request_failure", 'err="validation"') == before + 1


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"top_k": 0}, "`top_k` must be strictly positive"),
        (
            {"decoder_input_details": True},
            "`decoder_input_details` == true is not supported when streaming tokens",
        ),
        ({"best_of": 2, "do_sample": True}, "`best_of` != 1 is not supported when streaming tokens"),
    ],
)
def test_stream_errors_are_events_in_a_200_stream(
    engine_url: str, parameters: dict[str, Any], message: str
) -> None:
    response = post(engine_url, "/generate_stream", {"inputs": "Hello", "parameters": parameters})
    assert response.status_code == 200
    assert response.content == (
        b'data: {"error":"Input validation error: ' + message.encode() + b'","error_type":"validation"}\n\n'
    )


@pytest.mark.parametrize(
    ("body", "headers", "status", "prefix"),
    [
        (b'{"inputs": "Hello"}', {}, 415, "Expected request with `Content-Type: application/json`"),
        (
            b'{"inputs": "Hello"',
            {"content-type": "application/json"},
            400,
            "Failed to parse the request body as JSON: ",
        ),
        (
            b"not json",
            {"content-type": "application/json"},
            400,
            "Failed to parse the request body as JSON: ",
        ),
        (
            b'{"input": "Hello"}',
            {"content-type": "application/json"},
            422,
            "Failed to deserialize the JSON body into the target type: missing field `inputs`",
        ),
        (
            b'{"inputs": 5}',
            {"content-type": "application/json"},
            422,
            "Failed to deserialize the JSON body into the target type: ",
        ),
        (
            b'{"inputs": "x", "parameters": {"stop": null}}',
            {"content-type": "application/json"},
            422,
            "Failed to deserialize the JSON body into the target type: ",
        ),
        (
            b'{"inputs": "x", "parameters": {"details": null}}',
            {"content-type": "application/json"},
            422,
            "Failed to deserialize the JSON body into the target type: ",
        ),
        (
            b'{"inputs": "x", "parameters": {"max_new_tokens": -1}}',
            {"content-type": "application/json"},
            422,
            "Failed to deserialize the JSON body into the target type: ",
        ),
        (
            b'{"inputs": "x", "parameters": {"temperature": "hot"}}',
            {"content-type": "application/json"},
            422,
            "Failed to deserialize the JSON body into the target type: ",
        ),
    ],
)
def test_bodies_that_are_not_the_right_json_get_plain_text_errors(
    engine_url: str, body: bytes, headers: dict[str, str], status: int, prefix: str
) -> None:
    response = requests.post(engine_url + "/generate", data=body, headers=headers, timeout=TIMEOUT)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith(prefix)


# ----- OpenAI-style routes -------------------------------------------------------------------------
def test_chat_stream_bytes_end_with_done(engine_url: str) -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
        "stream": True,
        "temperature": 0,
    }
    response = post(engine_url, "/v1/chat/completions", body)
    assert response.content.endswith(b"data: [DONE]\n\n")
    chunks = [json.loads(p) for p in sse_payloads(response.content)[:-1]]
    assert [c["choices"][0]["delta"]["role"] for c in chunks] == ["assistant", "assistant"]
    assert chunks[0]["model"] == "switchboard/demo-random-llama"  # no model given: the served id
    assert chunks[-1]["usage"] is None


def test_chat_tools_are_refused_before_the_stream_starts(engine_url: str) -> None:
    tools = post(
        engine_url,
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        },
    )
    assert tools.status_code == 422 and tools.json()["error_type"] == "tool_error"


def test_chat_logprobs(engine_url: str) -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 2,
    }
    choice = post(engine_url, "/v1/chat/completions", body).json()["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == 3 and all(len(c["top_logprobs"]) == 2 for c in content)
    assert "".join(c["token"] for c in content) == choice["message"]["content"]


def test_completions_non_stream_with_several_prompts(engine_url: str) -> None:
    body = {"prompt": ["Hello", "Good morning operator"], "max_tokens": 4, "temperature": 0}
    out = post(engine_url, "/v1/completions", body).json()
    assert out["object"] == "text_completion"
    assert [c["index"] for c in out["choices"]] == [0, 1]
    assert out["choices"][0]["text"] == generate(engine_url, "Hello", max_new_tokens=4)["generated_text"]
    assert out["usage"]["completion_tokens"] == 8
    assert all(c["finish_reason"] == "length" for c in out["choices"])


def test_completions_stream_interleaves_prompts_and_ends_with_usage_and_done(engine_url: str) -> None:
    body = {"prompt": ["Hello", "Good morning operator"], "max_tokens": 3, "temperature": 0, "stream": True}
    response = post(engine_url, "/v1/completions", body)
    payloads = sse_payloads(response.content)
    assert payloads[-1] == "[DONE]"
    events = [json.loads(p) for p in payloads[:-1]]
    finals = [e for e in events if "usage" in e]
    assert sorted(e["choices"][0]["index"] for e in finals) == [0, 1]
    assert all(e["choices"][0]["finish_reason"] == "length" for e in finals)
    assert len(events) == 6
    text0 = "".join(e["choices"][0]["text"] for e in events if e["choices"][0]["index"] == 0)
    assert text0 == generate(engine_url, "Hello", max_new_tokens=3)["generated_text"]


def test_completions_rejects_suffix_and_too_many_prompts(engine_url: str) -> None:
    suffix = post(engine_url, "/v1/completions", {"prompt": "x", "suffix": "y"})
    assert suffix.status_code == 422 and suffix.json()["error_type"] == "suffix not supported"
    many = post(engine_url, "/v1/completions", {"prompt": ["a"] * 5})
    assert many.status_code == 422
    assert many.json() == {
        "error": "Number of prompts exceeds the maximum allowed batch size of 4",
        "error_type": "batch size exceeded",
    }


def test_non_finite_logprobs_serialise_as_null(engine_url: str) -> None:
    # With top_k=2, every other token's logprob is -inf after the warper; serde writes null.
    body = generate(
        engine_url, max_new_tokens=2, details=True, do_sample=True, seed=1, top_k=2, top_n_tokens=4
    )
    tops = body["details"]["top_tokens"]
    assert [t["logprob"] for t in tops[0]][2:] == [None, None]
    assert all(t["logprob"] is not None for t in body["details"]["tokens"])
