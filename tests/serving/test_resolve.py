"""Resolve: defaults, prompt rendering and the context-window policy (no I/O)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from serving.catalog import BackendView, Limits, ReleaseView
from serving.gateway.errors import BadRequest
from serving.gateway.protocols import parse_chat, parse_completion
from serving.gateway.resolve import prepare


def _release(window: int = 200, defaults: dict | None = None, prompt=None) -> ReleaseView:
    backend = BackendView(
        id=1,
        uid="1.0",
        name="b",
        kind="engine",
        credential="",
        replicas=(),
        max_concurrency=1,
        health_check_interval_s=10,
        circuit_failure_threshold=3,
        circuit_cooldown_s=30,
        connect_timeout_s=1,
        first_token_timeout_s=1,
        total_timeout_s=1,
        limits=Limits(),
    )
    return ReleaseView(
        id=1,
        name="r",
        model_version_id=1,
        model_name="m",
        context_window=window,
        price_in_per_mtok=Decimal(0),
        price_out_per_mtok=Decimal(0),
        defaults=defaults or {},
        prompt_version=prompt,
        backend=backend,
    )


def _chat(messages, **extra):
    return parse_chat({"model": "e", "messages": messages, **extra})


def test_release_defaults_apply_and_the_request_wins():
    release = _release(defaults={"temperature": 0.2, "max_tokens": 17, "top_p": 0.5})
    prepared = prepare(_chat([{"role": "user", "content": "hi"}], temperature=0.9), release)
    assert prepared.generation.params == {"temperature": 0.9, "top_p": 0.5}
    assert prepared.generation.max_tokens == 17


def test_old_turns_are_dropped_first_keeping_system_and_last_message():
    long = "x" * 240  # ~81 tokens each by the typical-text estimate (no tokenizer here)
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": long},
        {"role": "assistant", "content": long},
        {"role": "user", "content": "and now?"},
    ]
    prepared = prepare(_chat(messages, max_tokens=50), _release(window=200))
    kept = [m["content"] for m in prepared.generation.messages]
    assert kept == ["be brief", long, "and now?"] or kept == ["be brief", "and now?"]
    assert prepared.generation.prompt_tokens_estimate + 50 <= 200
    assert kept[0] == "be brief" and kept[-1] == "and now?"


def test_a_prompt_that_cannot_fit_is_a_400_naming_the_sizes():
    with pytest.raises(BadRequest, match="context window of 200"):
        prepare(parse_completion({"model": "e", "prompt": "y" * 900, "max_tokens": 10}), _release(window=200))


def test_without_max_tokens_the_output_budget_shrinks_to_fit():
    prepared = prepare(parse_completion({"model": "e", "prompt": "y" * 450}), _release(window=200))
    assert prepared.generation.max_tokens == 200 - prepared.generation.prompt_tokens_estimate


def test_prompt_version_is_rendered_with_request_variables():
    from types import SimpleNamespace

    version = SimpleNamespace(
        prompt=SimpleNamespace(name="support"),
        version=3,
        system_message="You help {{ customer }}.",
        template="Ticket: {{ ticket }}",
        variables_schema={},
    )
    release = _release(prompt=version)
    prepared = prepare(
        _chat([{"role": "user", "content": "status?"}], variables={"customer": "ACME", "ticket": "T-1"}),
        release,
    )
    assert [m["content"] for m in prepared.generation.messages] == [
        "You help ACME.",
        "Ticket: T-1",
        "status?",
    ]
    with pytest.raises(BadRequest, match="ticket"):
        prepare(_chat([{"role": "user", "content": "status?"}], variables={"customer": "ACME"}), release)


# --- token bounds: what admission reserves must cover what the backend counts -------------------

TEXTS = [
    "Say hello to the benchmark.",
    "東京都は日本の首都です。大阪は西にあります。",  # CJK: 3 bytes a character
    "def f(x):\n    return {k: v ** 2 for k, v in x.items() if v}",  # code
    "🙂🚀✨ émigré naïve café",  # emoji and accents
]


@pytest.fixture(scope="module")
def demo_counter():
    """The demo model's tokenizer (a byte-level BPE with a 4096-token vocabulary)."""
    from tokenizers import Tokenizer

    from serving.engine.default_model import ensure_default_model
    from serving.gateway.tokens import TokenCounter

    folder = ensure_default_model()
    return TokenCounter(Tokenizer.from_file(str(folder / "tokenizer.json")), "demo")


@pytest.mark.parametrize("text", TEXTS)
def test_byte_bound_covers_the_real_token_count_where_bytes_over_3_did_not(text, demo_counter):
    from serving.gateway.resolve import measure

    real = demo_counter.count(text)
    _, bound = measure(text, None)
    assert bound >= real
    if "東" in text:
        assert len(text.encode()) // 3 + 1 < real  # the old estimate under-counted this text


def test_with_a_tokenizer_the_estimate_and_the_bound_are_the_exact_count(demo_counter):
    from dataclasses import replace

    from serving.gateway.resolve import PER_MESSAGE_OVERHEAD, PER_REQUEST_OVERHEAD

    release = replace(_release(window=1000), counter=demo_counter)
    prepared = prepare(_chat([{"role": "user", "content": TEXTS[1]}], max_tokens=10), release)
    exact = demo_counter.count(TEXTS[1]) + PER_MESSAGE_OVERHEAD + PER_REQUEST_OVERHEAD
    assert prepared.generation.prompt_tokens_estimate == prepared.generation.prompt_tokens_bound == exact


def test_without_a_tokenizer_the_bound_is_bytes_capped_at_the_context_window():
    prepared = prepare(
        parse_completion({"model": "e", "prompt": "é" * 100, "max_tokens": 5}), _release(window=150)
    )
    assert prepared.generation.prompt_tokens_bound == 150  # 201 bytes + overhead, but no prompt exceeds W
    assert prepared.generation.prompt_tokens_estimate < prepared.generation.prompt_tokens_bound
