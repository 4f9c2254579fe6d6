"""Values that cross a process or network boundary on the request path.

Client protocols (OpenAI, TGI, WebSocket) are parsed into a `GenerationRequest`; backends answer
with `TokenChunk`s; the router answers with a `RouteDecision`. Everything in between speaks only
these, so any client protocol can be served by any backend kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Api = Literal["chat", "completions", "generate", "embeddings"]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A request after resolve: rendered, defaults applied, trimmed to the context window."""

    api: Api
    model: str  # the name the backend knows the model by
    max_tokens: int
    messages: tuple[dict[str, Any], ...] = ()  # chat only
    prompt: str = ""  # completions / generate only
    params: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, stop, seed, ...
    # Billed when no backend reports a count, and what the context window is fitted with.
    prompt_tokens_estimate: int = 0
    # An upper bound on the backend's count: what admission reserves (resolve.py explains both).
    prompt_tokens_bound: int = 0


@dataclass(frozen=True, slots=True)
class TokenChunk:
    """One streamed piece of output. The last chunk carries the finish reason and usage."""

    text: str
    token_id: int | None = None
    special: bool = False
    logprob: float | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole (non-streamed) generation."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Which replica serves an attempt, and why (for logs, headers and tests)."""

    replica_id: int
    url: str
    reason: Literal["affinity", "least_loaded", "half_open_probe"]
