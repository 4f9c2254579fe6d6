"""HTTP plumbing shared by the routes: axum-style body errors, JSON errors, and SSE responses."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)
BODY_LIMIT = 2_000_000  # TGI's default --payload-limit
KEEPALIVE = b":\n\n"
Body = TypeVar("Body", bound=BaseModel)


class BodyRejected(Exception):
    """A request body axum would refuse before the handler runs; answered in plain text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> Response:
        return PlainTextResponse(self.message, status_code=self.status)


async def parse_body(request: Request, model: type[Body]) -> Body:
    """Parse and type-check a JSON body the way axum's `Json` extractor does."""
    if not _is_json(request.headers.get("content-type", "")):
        raise BodyRejected(415, "Expected request with `Content-Type: application/json`")
    raw = await request.body()
    if len(raw) > BODY_LIMIT:
        raise BodyRejected(413, "Failed to buffer the request body: length limit exceeded")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyRejected(400, f"Failed to parse the request body as JSON: {_syntax_message(exc)}") from exc
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise BodyRejected(
            422, f"Failed to deserialize the JSON body into the target type: {_data_message(exc)}"
        ) from exc


def _is_json(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = mime.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def _syntax_message(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return str(exc)


def _data_message(exc: PydanticValidationError) -> str:
    first = exc.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    if first["type"] == "missing":
        return f"missing field `{first['loc'][-1]}`"
    return f"{location}: {first['msg']}" if location else str(first["msg"])


def error_response(
    status: int, message: str, error_type: str, headers: dict[str, str] | None = None
) -> Response:
    return json_response({"error": message, "error_type": error_type}, status=status, headers=headers)


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(payload), status_code=status, media_type="application/json", headers=headers)


def dumps(payload: Any) -> bytes:
    """Compact JSON as serde writes it; non-finite floats become null (serde does the same)."""
    try:  # the per-token path: one pass, no copy
        return _ENCODER.encode(payload).encode()
    except ValueError:  # a -inf logprob somewhere (e.g. a top token cut by top_k)
        return _ENCODER.encode(_finite(payload)).encode()


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def sse_event(payload: Any) -> bytes:
    # axum 0.7: "data: " (with the space; huggingface_hub needs it) + JSON + blank line.
    return b"data: " + dumps(payload) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


class EventStreamResponse(Response):
    """An SSE response that stops its source as soon as the client disconnects.

    The source is consumed in one task while another waits for `http.disconnect`; whichever ends
    first cancels the other, and the source is always closed, which cancels the generation.
    """

    media_type = "text/event-stream"

    def __init__(self, source: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> None:
        self.source = source
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        pump = asyncio.ensure_future(self._pump(send))
        gone = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, gone):
                task.cancel()
            await asyncio.gather(pump, gone, return_exceptions=True)
            await _close(self.source)
        if not pump.cancelled() and pump.exception() is not None:
            # The stream is cut short without its last chunk; the client sees a broken response.
            log.error("SSE stream failed", exc_info=pump.exception())

    async def _pump(self, send: Send) -> None:
        async for chunk in self.source:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _close(source: AsyncIterator[bytes]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()


async def run_until_disconnect(request: Request, work: asyncio.Future[Any]) -> Any:
    """Await `work` unless the client goes away first; then cancel it and raise ClientGone."""
    gone = asyncio.ensure_future(_wait_for_disconnect(request.receive))
    try:
        done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if work in done:
        return work.result()
    work.cancel()
    await asyncio.gather(work, return_exceptions=True)
    raise ClientGone()


class ClientGone(Exception):
    """The client disconnected before its response was ready."""
