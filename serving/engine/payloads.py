"""Response bodies in TGI's exact shapes (router/src/lib.rs), built from scheduler events."""

from __future__ import annotations

import time
from typing import Any

from serving.engine.params import FinalEvent, FinishReason, PrefillToken, Token
from serving.engine.validation import ValidatedGenerate

TGI_VERSION = "3.3.6-dev0"  # the router version whose wire protocol this engine mirrors
SYSTEM_FINGERPRINT = f"{TGI_VERSION}-native"


def token_json(token: Token) -> dict[str, Any]:
    return {"id": token.id, "text": token.text, "logprob": token.logprob, "special": token.special}


def prefill_json(token: PrefillToken) -> dict[str, Any]:
    return {"id": token.id, "text": token.text, "logprob": token.logprob}


def output_text(validated: ValidatedGenerate, final: FinalEvent) -> str:
    return validated.inputs + final.generated_text if validated.return_full_text else final.generated_text


def generate_json(validated: ValidatedGenerate, final: FinalEvent) -> dict[str, Any]:
    """`/generate`'s GenerateResponse; `details` only when asked for, as TGI leaves it out."""
    body: dict[str, Any] = {"generated_text": output_text(validated, final)}
    if validated.details or validated.decoder_input_details:
        details: dict[str, Any] = {
            "finish_reason": final.finish_reason.value,
            "generated_tokens": final.generated_tokens,
            "seed": final.seed,
            "prefill": [prefill_json(t) for t in final.prefill],
            "tokens": [token_json(t) for t in final.tokens],
        }
        if validated.request.top_n_tokens > 0:
            details["top_tokens"] = [[token_json(t) for t in top] for top in final.all_top_tokens]
        body["details"] = details
    return body


def stream_token_json(
    index: int, token: Token, top: tuple[Token, ...], validated: ValidatedGenerate, final: FinalEvent | None
) -> dict[str, Any]:
    """One `/generate_stream` event; the last one carries generated_text and (optional) details."""
    body: dict[str, Any] = {"index": index, "token": token_json(token)}
    if validated.request.top_n_tokens > 0:
        body["top_tokens"] = [token_json(t) for t in top]
    body["generated_text"] = output_text(validated, final) if final else None
    body["details"] = (
        {
            "finish_reason": final.finish_reason.value,
            "generated_tokens": final.generated_tokens,
            "seed": final.seed,
            "input_length": validated.request.input_length,
        }
        if final is not None and validated.details
        else None
    )
    return body


def timing_headers(
    validated: ValidatedGenerate, final: FinalEvent, arrived: float, queued: float, compute_type: str
) -> dict[str, str]:
    """TGI's x-* headers: x-compute-time in seconds, the others in milliseconds."""
    now = time.time()
    inference = final.finished_at - final.started_at
    return {
        "x-compute-type": compute_type,
        "x-compute-time": f"{now - arrived:.6f}",
        "x-compute-characters": str(len(validated.inputs)),
        "x-total-time": str(int((now - arrived) * 1000)),
        "x-validation-time": str(int((queued - arrived) * 1000)),
        "x-queue-time": str(int(max(final.started_at - queued, 0.0) * 1000)),
        "x-inference-time": str(int(inference * 1000)),
        "x-time-per-token": str(int(inference * 1000 / max(final.generated_tokens, 1))),
        "x-prompt-tokens": str(validated.request.input_length),
        "x-generated-tokens": str(final.generated_tokens),
    }


def openai_finish_reason(reason: FinishReason) -> str:
    """TGI's `FinishReason::format(true)`: eos_token is reported as "stop"."""
    return "stop" if reason is FinishReason.EOS_TOKEN else reason.value


def usage_json(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_logprobs_json(tokens: list[tuple[Token, tuple[Token, ...]]]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": token.text,
                "logprob": token.logprob,
                "top_logprobs": [{"token": t.text, "logprob": t.logprob} for t in top],
            }
            for token, top in tokens
        ]
    }


def chat_completion_json(
    model: str, text: str, final: FinalEvent, prompt_tokens: int, logprobs: bool
) -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "id": "",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": chat_logprobs_json(list(zip(final.tokens, final.all_top_tokens, strict=True)))
                if logprobs
                else None,
                "finish_reason": openai_finish_reason(final.finish_reason),
            }
        ],
        "usage": usage_json(prompt_tokens, final.generated_tokens),
    }


def chat_chunk_json(
    model: str, token: Token, top: tuple[Token, ...], final: FinalEvent | None, logprobs: bool
) -> dict[str, Any]:
    # Special tokens (EOS) stream as empty content, as TGI's chat.rs does.
    content = "" if token.special else token.text
    return {
        "object": "chat.completion.chunk",
        "id": "",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": content},
                "logprobs": chat_logprobs_json([(token, top)]) if logprobs else None,
                "finish_reason": openai_finish_reason(final.finish_reason) if final else None,
            }
        ],
        "usage": None,
    }


def chat_usage_chunk_json(model: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "id": "",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [],
        "usage": usage_json(prompt_tokens, completion_tokens),
    }


def completion_choice(index: int, text: str, finish_reason: str) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}


def completion_json(
    model: str, choices: list[dict[str, Any]], usage: dict[str, int] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "object": "text_completion",
        "id": "",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return body


def openai_stream_error(message: str, status: int = 422) -> dict[str, Any]:
    """Errors inside chat/completions streams: OpenAI's shape, always 422 as TGI sends them."""
    return {"error": {"message": message, "http_status_code": status}}
