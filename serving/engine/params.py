"""Values that cross the boundary between the HTTP handlers and the scheduler thread.

All frozen: a handler builds a `GenerationRequest` once, and the scheduler reads it from
another thread, so nothing here may change after construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FinishReason(StrEnum):
    LENGTH = "length"
    EOS_TOKEN = "eos_token"  # noqa: S105 (a finish reason, not a password)
    STOP_SEQUENCE = "stop_sequence"


@dataclass(frozen=True)
class SamplingParams:
    do_sample: bool
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    seed: int = 0

    @property
    def needs_processing(self) -> bool:
        """False when the token is a plain argmax of the raw logits (the fast batched path)."""
        return self.do_sample or self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0


@dataclass(frozen=True)
class StoppingParams:
    max_new_tokens: int
    stop_sequences: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    """A validated, tokenised request, ready for the scheduler."""

    input_ids: tuple[int, ...]
    sampling: SamplingParams
    stopping: StoppingParams
    top_n_tokens: int = 0
    decoder_input_details: bool = False

    @property
    def input_length(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class Token:
    id: int
    text: str
    logprob: float
    special: bool


@dataclass(frozen=True)
class PrefillToken:
    id: int
    text: str
    logprob: float | None


@dataclass(frozen=True)
class TokenEvent:
    """One generated token. `top_tokens` is empty unless the request asked for them."""

    token: Token
    top_tokens: tuple[Token, ...] = ()


@dataclass(frozen=True)
class FinalEvent:
    """The last token of a request together with the finished generation."""

    token: Token
    top_tokens: tuple[Token, ...]
    generated_text: str
    generated_tokens: int
    finish_reason: FinishReason
    seed: int | None
    tokens: tuple[Token, ...]
    all_top_tokens: tuple[tuple[Token, ...], ...]
    prefill: tuple[PrefillToken, ...]
    queued_at: float
    started_at: float
    finished_at: float


@dataclass(frozen=True)
class ErrorEvent:
    """The generation failed inside the model; TGI reports it as a 424 `generation` error."""

    message: str


Event = TokenEvent | FinalEvent | ErrorEvent
