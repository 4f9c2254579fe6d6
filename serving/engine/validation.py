"""TGI's request validation: same checks, same order, same messages (router/src/validation.rs).

The first failing check wins, and the HTTP layer prefixes "Input validation error: ". This runs
on the validation thread pool because it tokenises.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from serving.engine.model import TextCodec
from serving.engine.params import GenerationRequest, SamplingParams, StoppingParams
from serving.engine.schemas import GenerateParameters


class ValidationFailure(Exception):
    """A request TGI would answer with 422 `validation`."""


@dataclass(frozen=True)
class ValidationLimits:
    max_input_tokens: int
    max_total_tokens: int
    max_best_of: int = 1
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5


@dataclass(frozen=True)
class ValidatedGenerate:
    request: GenerationRequest
    inputs: str
    return_full_text: bool
    details: bool
    decoder_input_details: bool


def validate_parameters(p: GenerateParameters, limits: ValidationLimits) -> None:
    """The checks that need no tokenizer, in TGI's order (steps 1-11)."""
    best_of = p.best_of
    if best_of is not None and best_of > 1 and not _samples(p):
        raise ValidationFailure("you must use sampling when `best_of` is > 1")
    if best_of is not None and best_of != 1:
        if limits.max_best_of == 1:
            raise ValidationFailure("`best_of` != 1 is not allowed for this endpoint")
        if best_of == 0 or best_of > limits.max_best_of:
            raise ValidationFailure(f"`best_of` must be > 0 and <= {limits.max_best_of}. Given: {best_of}")
    if p.temperature is not None and p.temperature <= 0:
        raise ValidationFailure("`temperature` must be strictly positive")
    if p.repetition_penalty is not None and p.repetition_penalty <= 0:
        raise ValidationFailure("`repetition_penalty` must be strictly positive")
    if p.frequency_penalty is not None and not -2.0 <= p.frequency_penalty <= 2.0:
        raise ValidationFailure("`frequency_penalty` must be >= -2.0 and <= 2.0")
    if p.top_p is not None and not 0.0 < p.top_p < 1.0:
        raise ValidationFailure("`top_p` must be > 0.0 and < 1.0")
    if p.typical_p is not None and not 0.0 < p.typical_p < 1.0:
        raise ValidationFailure("`typical_p` must be > 0.0 and < 1.0")
    if p.top_k is not None and p.top_k <= 0:
        raise ValidationFailure("`top_k` must be strictly positive")
    if p.max_new_tokens == 0:
        raise ValidationFailure("`max_new_tokens` must be strictly positive")
    if len(p.stop) > limits.max_stop_sequences:
        raise ValidationFailure(
            f"`stop` supports up to {limits.max_stop_sequences} stop sequences. Given: {len(p.stop)}"
        )
    if p.seed is not None and best_of is not None and best_of > 1:
        raise ValidationFailure("`seed` must not be set when `best_of` > 1")
    top_n = p.top_n_tokens or 0
    if top_n > limits.max_top_n_tokens:
        raise ValidationFailure(
            f"`top_n_tokens` must be >= 0 and <= {limits.max_top_n_tokens}. Given: {top_n}"
        )


def validate_generate(
    inputs: str,
    p: GenerateParameters,
    limits: ValidationLimits,
    codec: TextCodec,
    *,
    add_special_tokens: bool = True,
    default_return_full_text: bool = False,
) -> ValidatedGenerate:
    validate_parameters(p, limits)
    if not inputs:
        raise ValidationFailure("`inputs` cannot be empty")
    if p.truncate is not None and not 0 < p.truncate <= limits.max_input_tokens:
        limit = limits.max_input_tokens
        raise ValidationFailure(
            f"`truncate` must be strictly positive and less than {limit}. Given: {p.truncate}"
        )
    input_ids = tokenize(codec, inputs, add_special_tokens=add_special_tokens)
    if p.truncate is not None:
        input_ids = input_ids[-p.truncate :]  # TGI truncates from the left: the end is kept
    max_new_tokens = _check_lengths(len(input_ids), p.max_new_tokens, limits)
    if p.grammar is not None:
        raise ValidationFailure("grammar is not supported")
    if p.watermark:
        # Not a TGI message: TGI implements watermarking, this engine does not (yet).
        raise ValidationFailure("`watermark` is not supported by this engine")
    request = GenerationRequest(
        input_ids=tuple(input_ids),
        sampling=_sampling(p),
        stopping=StoppingParams(max_new_tokens=max_new_tokens, stop_sequences=tuple(p.stop)),
        top_n_tokens=p.top_n_tokens or 0,
        decoder_input_details=p.decoder_input_details,
    )
    full_text = p.return_full_text if p.return_full_text is not None else default_return_full_text
    return ValidatedGenerate(request, inputs, full_text, p.details, p.decoder_input_details)


def tokenize(codec: TextCodec, text: str, *, add_special_tokens: bool) -> list[int]:
    return codec.encode(text, add_special_tokens=add_special_tokens)


def _check_lengths(input_length: int, requested: int | None, limits: ValidationLimits) -> int:
    # Unset means "up to the context": TGI's saturating_sub, so never negative.
    max_new_tokens = requested if requested is not None else max(limits.max_total_tokens - input_length, 0)
    if input_length + max_new_tokens > limits.max_total_tokens:
        raise ValidationFailure(
            f"`inputs` tokens + `max_new_tokens` must be <= {limits.max_total_tokens}. "
            f"Given: {input_length} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
        )
    if input_length > limits.max_input_tokens:
        raise ValidationFailure(
            f"`inputs` must have less than {limits.max_input_tokens} tokens. Given: {input_length}"
        )
    return max_new_tokens


def _samples(p: GenerateParameters) -> bool:
    """TGI samples when asked to, or when any warper is away from its neutral value."""
    return (
        p.do_sample
        or (p.temperature is not None and p.temperature != 1.0)
        or (p.top_k is not None and p.top_k != 0)
        or (p.top_p is not None and p.top_p < 1.0)
        or (p.typical_p is not None and p.typical_p < 1.0)
    )


def _sampling(p: GenerateParameters) -> SamplingParams:
    do_sample = _samples(p)
    seed = p.seed if p.seed is not None else secrets.randbits(63)
    return SamplingParams(
        do_sample=do_sample,
        temperature=p.temperature if p.temperature is not None else 1.0,
        top_k=p.top_k or 0,
        top_p=p.top_p if p.top_p is not None else 1.0,
        typical_p=p.typical_p if p.typical_p is not None else 1.0,
        repetition_penalty=p.repetition_penalty if p.repetition_penalty is not None else 1.0,
        frequency_penalty=p.frequency_penalty or 0.0,
        seed=seed,
    )
