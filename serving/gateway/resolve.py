"""Resolve: endpoint → release (sticky split), prompt rendering, defaults, context-window trim.

Token counts. Two numbers per request:
- the estimate, used to fit the context window and billed when no backend reports a count: the
  exact count when the model version's tokenizer is available locally (tokens.py), otherwise a
  typical-text estimate of UTF-8 bytes / 3;
- the bound, what admission reserves against rate limits and budgets: an upper bound on what the
  backend can count. With a local tokenizer it is the exact count; without one it is the UTF-8
  byte length + 1 per text (every token of a byte-level BPE covers at least one byte, and so does
  every SentencePiece piece or byte-fallback token, plus one for a dummy-prefix piece), capped at
  the context window (no backend accepts a longer prompt). Bytes / 3 was not a bound: code, CJK
  and small vocabularies (the demo model: 1 token a byte for CJK) count 1-3 tokens a byte.
Both add the chat template's tokens: PER_MESSAGE_OVERHEAD a message and PER_REQUEST_OVERHEAD once
(role markers, BOS, the generation prompt, a default system prompt; generous on purpose). A
template or normaliser that adds more is still billed as the backend counts it: settlement
charges the backend's figure and records the excess (pipeline.Call.settle_tokens).

Policy for fitting a request into the model's context window (W tokens, prompt estimate P,
output budget M = max_tokens):
1. M >= W is refused (400): no prompt could fit.
2. Chat: while P + M > W, the oldest message that is neither a system message nor the last
   message is dropped (conversation memory goes first, instructions and the question stay).
   (Without an explicit max_tokens, step 2 only needs a quarter of the window left for output.)
3. Still too long, and the client did not set max_tokens: M shrinks to W - P (at least 1).
4. Still too long: 400 naming the sizes. Plain prompts (completions, generate) are never cut:
   cutting text silently changes its meaning, so the client decides.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from serving.catalog import EndpointView, ReleaseView
from serving.gateway import prompting
from serving.gateway.errors import BadRequest, Unavailable
from serving.gateway.protocols import ClientRequest
from serving.gateway.routing import affinity_key, pick_weighted, sticky_bucket
from serving.gateway.tokens import TokenCounter
from serving.types import GenerationRequest

DEFAULT_MAX_TOKENS = 256
PER_MESSAGE_OVERHEAD = 8
PER_REQUEST_OVERHEAD = 32
# Prompts longer than this (characters) are counted in a worker thread, not on the event loop.
COUNT_INLINE_MAX_CHARS = 2048
_DEFAULT_PARAM_NAMES = (
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "stop",
    "top_k",
    "repetition_penalty",
    "typical_p",
    "do_sample",
)


def measure(text: str, counter: TokenCounter | None) -> tuple[int, int]:
    """(estimate, bound) of one text's tokens, without template overhead (see the module doc)."""
    if counter is not None:
        exact = counter.count(text)
        return exact, exact
    size = len(text.encode())
    return size // 3 + 1, size + 1


def prompt_size(client: ClientRequest) -> int:
    """Characters the client sent: decides whether counting runs inline or in a thread."""
    if client.messages:
        return sum(len(m["content"]) for m in client.messages)
    return len(client.prompt) + sum(len(text) for text in client.inputs)


def pick_release(endpoint: EndpointView, subject: str) -> ReleaseView:
    """The traffic policy's choice for this subject: deterministic, so a user stays on one arm."""
    if not endpoint.traffic:
        raise Unavailable(
            f"endpoint '{endpoint.name}' has no release with traffic; ask its owner to set a policy",
            retry_after=30,
            code="endpoint_not_serving",
        )
    if len(endpoint.traffic) == 1:
        return endpoint.traffic[0][0]
    index = pick_weighted([w for _, w in endpoint.traffic], sticky_bucket(endpoint.id, subject))
    return endpoint.traffic[index][0]


@dataclass(frozen=True, slots=True)
class Prepared:
    generation: GenerationRequest
    affinity: int | None


def _max_tokens(client: ClientRequest, release: ReleaseView) -> tuple[int, bool]:
    if client.max_tokens is not None:
        return client.max_tokens, True
    default = (
        release.defaults.get("max_tokens") or release.defaults.get("max_new_tokens") or DEFAULT_MAX_TOKENS
    )
    return int(default), False


def _params(client: ClientRequest, release: ReleaseView) -> dict[str, Any]:
    defaults = {k: v for k, v in release.defaults.items() if k in _DEFAULT_PARAM_NAMES}
    return {**defaults, **client.params}


def _chat_messages(client: ClientRequest, release: ReleaseView) -> list[dict[str, Any]]:
    messages = list(client.messages)
    if release.prompt_version is None:
        return messages
    rendered = prompting.render(release.prompt_version, client.variables)
    head = [{"role": "system", "content": rendered.system}] if rendered.system else []
    if rendered.text:
        head.append({"role": "user", "content": rendered.text})
    return head + messages


def _prompt_text(client: ClientRequest, release: ReleaseView) -> str:
    if release.prompt_version is None:
        return client.prompt
    rendered = prompting.render(release.prompt_version, client.variables)
    return "\n\n".join(part for part in (rendered.system, rendered.text, client.prompt) if part)


def _trim_chat(messages: list[dict[str, Any]], sizes: list[tuple[int, int]], budget: int) -> tuple[int, int]:
    """Drops old turns (in place) until the estimate fits `budget`; returns (estimate, bound)."""
    estimate = sum(e for e, _ in sizes) + PER_MESSAGE_OVERHEAD * len(sizes) + PER_REQUEST_OVERHEAD
    while estimate > budget:
        droppable = next((i for i, m in enumerate(messages[:-1]) if m["role"] != "system"), None)
        if droppable is None:
            break
        estimate -= sizes[droppable][0] + PER_MESSAGE_OVERHEAD
        del messages[droppable], sizes[droppable]
    bound = sum(b for _, b in sizes) + PER_MESSAGE_OVERHEAD * len(sizes) + PER_REQUEST_OVERHEAD
    return estimate, bound


def _fit(prompt_tokens: int, max_tokens: int, explicit: bool, window: int) -> int:
    if prompt_tokens + max_tokens <= window:
        return max_tokens
    if not explicit and window - prompt_tokens >= 1:
        return window - prompt_tokens
    raise BadRequest(
        f"the prompt (~{prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the model's context "
        f"window of {window} tokens: shorten the input or lower max_tokens",
        code="context_length_exceeded",
    )


def prefix_of(messages: list[dict[str, Any]], prompt: str) -> str:
    """The part of a conversation that repeats across its turns: all but the last message."""
    if messages:
        head = messages[:-1] if len(messages) > 1 else messages
        return (
            json.dumps(head, separators=(",", ":"))[:2048] if len(messages) > 1 else head[0]["content"][:256]
        )
    return prompt[:256]


def prepare(client: ClientRequest, release: ReleaseView) -> Prepared:
    window = release.context_window
    max_tokens, explicit = _max_tokens(client, release)
    if max_tokens >= window and explicit:
        raise BadRequest(f"max_tokens must be below the model's context window of {window} tokens")
    max_tokens = min(max_tokens, window - 1)
    counter = release.counter
    if client.api == "chat":
        # Without an explicit max_tokens, history is kept as long as a quarter of the window is left.
        keep_for_output = max_tokens if explicit else min(max_tokens, window // 4)
        messages = _chat_messages(client, release)
        sizes = [measure(m["content"], counter) for m in messages]
        estimate, bound = _trim_chat(messages, sizes, window - keep_for_output)
        prompt = ""
    else:
        messages = []
        prompt = _prompt_text(client, release)
        estimate, bound = (n + PER_REQUEST_OVERHEAD for n in measure(prompt, counter))
    max_tokens = _fit(estimate, max_tokens, explicit, window)
    generation = GenerationRequest(
        api=client.api,
        model=release.model_name,
        max_tokens=max_tokens,
        messages=tuple(messages),
        prompt=prompt,
        params=_params(client, release),
        prompt_tokens_estimate=estimate,
        prompt_tokens_bound=max(estimate, min(bound, window)),
    )
    return Prepared(generation=generation, affinity=affinity_key(prefix_of(messages, prompt)))


def prepare_embeddings(client: ClientRequest, release: ReleaseView) -> Prepared:
    """Embedding models have their own tokenizers (WordPiece, ...): always the byte bound, plus
    two special tokens an input ([CLS]/[SEP] or BOS/EOS)."""
    sizes = [measure(text, None) for text in client.inputs]
    generation = GenerationRequest(
        api="embeddings",
        model=release.model_name,
        max_tokens=0,
        prompt_tokens_estimate=sum(e for e, _ in sizes),
        prompt_tokens_bound=sum(b + 2 for _, b in sizes),
    )
    return Prepared(generation=generation, affinity=None)
