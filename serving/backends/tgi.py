"""Text Generation Inference, and the embedded engine that speaks the same protocol.

Chat goes to TGI's Messages API (`/v1/chat/completions`, where the server applies the model's chat
template); plain prompts go to the native `/generate` and `/generate_stream`, which report token
ids, the stop reason and the input length.
"""

from __future__ import annotations

from typing import Any

from serving.backends.base import BackendClient, BackendError, ChunkStream, Target, register_backend
from serving.backends.sse import OpenAIStream, TgiStream
from serving.types import Completion, EmbeddingResult, GenerationRequest

_FINISH_FROM_CHAT = {"stop": "eos_token"}
# TGI native parameters that have no OpenAI name; passed through when a TGI client sends them.
TGI_ONLY = (
    "top_k",
    "typical_p",
    "repetition_penalty",
    "watermark",
    "truncate",
    "grammar",
    "top_n_tokens",
    "do_sample",
)


def native_parameters(request: GenerationRequest) -> dict[str, Any]:
    """OpenAI-style parameters in TGI's spelling and ranges (temperature 0 means greedy)."""
    params = request.params
    out: dict[str, Any] = {"max_new_tokens": request.max_tokens, "details": True}
    temperature = params.get("temperature")
    if temperature is not None and temperature > 0:
        out["temperature"] = temperature
        out["do_sample"] = True
    if params.get("top_p") is not None and 0 < params["top_p"] < 1:
        out["top_p"] = params["top_p"]
    for name in ("seed", "stop", "frequency_penalty", *TGI_ONLY):
        if params.get(name) is not None:
            out[name] = params[name]
    if temperature == 0:
        out["do_sample"] = False
    return out


def chat_body(request: GenerationRequest, *, model: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": list(request.messages),
        "max_tokens": request.max_tokens,
    }
    for name in ("temperature", "top_p", "seed", "stop", "frequency_penalty", "presence_penalty"):
        if request.params.get(name) is not None:
            body[name] = request.params[name]
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


@register_backend("tgi")
class TgiBackend(BackendClient):
    # TGI treats any other model name as a LoRA adapter id; "tgi" means the base model.
    chat_model = "tgi"

    async def stream(self, target: Target, request: GenerationRequest) -> ChunkStream:
        if request.api == "chat":
            response = await self._post(
                target, "/v1/chat/completions", chat_body(request, model=self.chat_model, stream=True)
            )
            return OpenAIStream(response, chat=True)
        body = {"inputs": request.prompt, "parameters": native_parameters(request)}
        return TgiStream(await self._post(target, "/generate_stream", body))

    async def generate(self, target: Target, request: GenerationRequest) -> Completion:
        if request.api == "chat":
            payload, _ = await self._post_json(
                target, "/v1/chat/completions", chat_body(request, model=self.chat_model, stream=False)
            )
            return _chat_completion(payload, request)
        body = {"inputs": request.prompt, "parameters": native_parameters(request)}
        payload, headers = await self._post_json(target, "/generate", body)
        details = payload.get("details") or {}
        prompt_tokens = headers.get("x-prompt-tokens")
        return Completion(
            text=payload.get("generated_text", ""),
            finish_reason=details.get("finish_reason", "length"),
            prompt_tokens=int(prompt_tokens) if prompt_tokens else request.prompt_tokens_estimate,
            completion_tokens=int(details.get("generated_tokens", 0)),
        )

    async def embed(self, target: Target, *, model: str, inputs: list[str]) -> EmbeddingResult:
        payload, _ = await self._post_json(target, "/v1/embeddings", {"model": model, "input": inputs})
        return embedding_result(payload)

    async def health(self, target: Target) -> bool:
        return await self._get_ok(target, "/health")


@register_backend("engine")
class EngineBackend(TgiBackend):
    """The embedded engine implements TGI's protocol, so it is TGI on the wire."""


def _chat_completion(payload: dict[str, Any], request: GenerationRequest) -> Completion:
    try:
        choice = payload["choices"][0]
    except (KeyError, IndexError, TypeError) as exc:
        raise BackendError("backend chat answer has no choices") from exc
    usage = payload.get("usage") or {}
    finish = str(choice.get("finish_reason") or "length")
    return Completion(
        text=(choice.get("message") or {}).get("content") or "",
        finish_reason=_FINISH_FROM_CHAT.get(finish, finish),
        prompt_tokens=int(usage.get("prompt_tokens", request.prompt_tokens_estimate)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
    )


def embedding_result(payload: dict[str, Any]) -> EmbeddingResult:
    try:
        rows = sorted(payload["data"], key=lambda row: row.get("index", 0))
        vectors = tuple(tuple(float(x) for x in row["embedding"]) for row in rows)
    except (KeyError, TypeError, ValueError) as exc:
        raise BackendError("backend embeddings answer is malformed") from exc
    return EmbeddingResult(
        vectors=vectors, prompt_tokens=int((payload.get("usage") or {}).get("prompt_tokens", 0))
    )
