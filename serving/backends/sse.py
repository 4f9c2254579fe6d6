"""Parsers for the two upstream stream formats: OpenAI-shaped SSE and TGI's `/generate_stream`."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import aiohttp

from serving.backends.base import BackendError, ChunkStream, StreamCut
from serving.types import TokenChunk

# OpenAI reports "stop" for both EOS and stop sequences; TGI's raw names are the canonical ones here.
_OPENAI_FINISH = {
    "stop": "eos_token",
    "length": "length",
    "eos_token": "eos_token",
    "stop_sequence": "stop_sequence",
}


class _LineStream(ChunkStream):
    """Reads whatever bytes have arrived (not line by line), keeping complete `data:` lines, so
    events that arrive together are parsed together and can be relayed in one write."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.done = False
        self._partial = b""
        self._lines: deque[bytes] = deque()
        self._eof = False

    def close(self) -> None:
        # Closing (not releasing) drops the connection, which is how TGI learns the client left.
        self.done = True
        self.response.close()

    def ready(self) -> bool:
        return bool(self._lines) or self._eof

    async def _data(self) -> bytes | None:
        """The next `data:` payload, or None at the end of the body."""
        while not self._lines:
            if self._eof:
                return None
            try:
                piece = await self.response.content.readany()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.close()
                raise StreamCut(f"backend stream broke: {type(exc).__name__}") from exc
            if not piece:
                self._eof = True
                piece = b"\n"  # a last line without its newline still counts
            *complete, self._partial = (self._partial + piece).split(b"\n")
            self._lines.extend(line[5:].strip() for line in complete if line.startswith(b"data:"))
        return self._lines.popleft()


def _stream_error(payload: dict[str, Any]) -> BackendError:
    error = payload.get("error")
    if isinstance(error, dict):
        status = int(error.get("http_status_code") or 502)
        return BackendError(
            str(error.get("message", "")), status=status, retryable=status >= 500 or status == 429
        )
    error_type = str(payload.get("error_type", ""))
    status = {"validation": 422, "overloaded": 429}.get(error_type, 502)
    return BackendError(str(error), status=status, retryable=status != 422, error_type=error_type)


class OpenAIStream(_LineStream):
    """Chat or legacy completions chunks, ended by `data: [DONE]`."""

    def __init__(self, response: aiohttp.ClientResponse, *, chat: bool) -> None:
        super().__init__(response)
        self.chat = chat
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None

    async def __anext__(self) -> TokenChunk:
        while not self.done:
            data = await self._data()
            if data is None or data == b"[DONE]":
                return self._final(clean=data is not None)
            chunk = self._parse(data)
            if chunk is not None:
                return chunk
        raise StopAsyncIteration

    def _parse(self, data: bytes) -> TokenChunk | None:
        try:
            payload = json.loads(data)
        except ValueError as exc:
            self.close()
            raise StreamCut("backend sent an unreadable stream event") from exc
        if "error" in payload:
            self.close()
            raise _stream_error(payload)
        if payload.get("usage"):
            self.usage = payload["usage"]
        choices = payload.get("choices") or []
        if not choices:
            return None
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish = _OPENAI_FINISH.get(choice["finish_reason"], str(choice["finish_reason"]))
        text = (choice.get("delta") or {}).get("content") if self.chat else choice.get("text")
        return TokenChunk(text=text or "")

    def _final(self, *, clean: bool) -> TokenChunk:
        self.close()
        if not clean or self.finish is None:
            raise StreamCut()
        usage = self.usage or {}
        return TokenChunk(
            text="",
            finish_reason=self.finish,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        )


class TgiStream(_LineStream):
    """TGI `/generate_stream`: one event per token; the last has `generated_text` and details."""

    async def __anext__(self) -> TokenChunk:
        if self.done:
            raise StopAsyncIteration
        data = await self._data()
        if data is None:
            self.close()
            raise StreamCut()
        try:
            payload = json.loads(data)
        except ValueError as exc:
            self.close()
            raise StreamCut("backend sent an unreadable stream event") from exc
        if "error" in payload:
            self.close()
            raise _stream_error(payload)
        return self._token(payload)

    def _token(self, payload: dict[str, Any]) -> TokenChunk:
        token = payload.get("token") or {}
        if payload.get("generated_text") is None:
            return TokenChunk(
                text=token.get("text", ""),
                token_id=token.get("id"),
                special=bool(token.get("special")),
                logprob=token.get("logprob"),
            )
        self.close()
        details = payload.get("details") or {}
        return TokenChunk(
            text=token.get("text", ""),
            token_id=token.get("id"),
            special=bool(token.get("special")),
            logprob=token.get("logprob"),
            finish_reason=details.get("finish_reason", "length"),
            prompt_tokens=details.get("input_length"),
            completion_tokens=details.get("generated_tokens"),
        )
