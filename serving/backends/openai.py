"""Hosted OpenAI-compatible APIs. The replica URL is the API base, e.g. `https://host/v1`."""

from __future__ import annotations

from typing import Any

from serving.backends.base import BackendClient, BackendError, ChunkStream, Target, register_backend
from serving.backends.sse import OpenAIStream
from serving.backends.tgi import chat_body, embedding_result
from serving.types import Completion, EmbeddingResult, GenerationRequest

_FINISH = {"stop": "eos_token"}


def _completions_body(request: GenerationRequest, *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model,
        "prompt": request.prompt,
        "max_tokens": request.max_tokens,
    }
    for name in ("temperature", "top_p", "seed", "stop", "frequency_penalty", "presence_penalty"):
        if request.params.get(name) is not None:
            body[name] = request.params[name]
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


@register_backend("openai")
class OpenAIBackend(BackendClient):
    async def stream(self, target: Target, request: GenerationRequest) -> ChunkStream:
        if request.api == "chat":
            response = await self._post(
                target, "/chat/completions", chat_body(request, model=request.model, stream=True)
            )
            return OpenAIStream(response, chat=True)
        response = await self._post(target, "/completions", _completions_body(request, stream=True))
        return OpenAIStream(response, chat=False)

    async def generate(self, target: Target, request: GenerationRequest) -> Completion:
        chat = request.api == "chat"
        if chat:
            payload, _ = await self._post_json(
                target, "/chat/completions", chat_body(request, model=request.model, stream=False)
            )
        else:
            payload, _ = await self._post_json(
                target, "/completions", _completions_body(request, stream=False)
            )
        try:
            choice = payload["choices"][0]
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError("backend answer has no choices") from exc
        text = ((choice.get("message") or {}).get("content") if chat else choice.get("text")) or ""
        usage = payload.get("usage") or {}
        finish = str(choice.get("finish_reason") or "length")
        return Completion(
            text=text,
            finish_reason=_FINISH.get(finish, finish),
            prompt_tokens=int(usage.get("prompt_tokens", request.prompt_tokens_estimate)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
        )

    async def embed(self, target: Target, *, model: str, inputs: list[str]) -> EmbeddingResult:
        payload, _ = await self._post_json(target, "/embeddings", {"model": model, "input": inputs})
        return embedding_result(payload)

    async def health(self, target: Target) -> bool:
        return await self._get_ok(target, "/models")
