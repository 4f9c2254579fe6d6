"""The inference routes: a raw ASGI app mounted beside Django (controlplane.asgi_router).

OpenAI-compatible under /v1/, TGI-compatible under /endpoints/<name>/. Handlers parse, call the
pipeline, and encode; they hold no routing, budget or accounting logic of their own.

Raw ASGI rather than a framework: a route is a dict lookup, the body is read straight from
`receive`, and headers go out as the byte pairs the pipeline built. A Starlette route costs about
a fifth of a raw ASGI relay's throughput on these machines (shared/reference/hot-path-measurements.md:
~4,400 against ~5,500 req/s), and the gateway used none of what it adds.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from controlplane.logging import new_request_id
from serving import metrics
from serving.backends import BackendError
from serving.gateway import protocols
from serving.gateway.errors import BadRequest, GatewayError, NotFound, Unavailable
from serving.gateway.pipeline import Call
from serving.gateway.protocols import ClientRequest, StreamEncoder
from serving.gateway.runtime import get_gateway
from serving.types import Api, Completion

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_BODY_BYTES = 16 * 1024 * 1024
# A client that leaves is noticed by a watcher started this long into its request: shorter
# requests finish before it would run, so they never pay for a watcher task; longer ones (any
# real generation) stop their upstream work at most this late.
WATCH_AFTER_S = 0.05
_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class Exchange:
    """One HTTP request: its scope, the ASGI channels, and the endpoint name from the path."""

    __slots__ = ("name", "receive", "scope", "send", "started")

    def __init__(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.name = name
        self.started = False

    def header(self, name: bytes) -> str | None:
        for key, value in self.scope["headers"]:
            if key == name:
                return str(value.decode("latin-1"))
        return None

    async def body(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise BadRequest(f"the body is larger than {MAX_BODY_BYTES} bytes", code="body_too_large")
            if not message.get("more_body"):
                return chunk if not chunks else b"".join([*chunks, chunk])
            chunks.append(chunk)

    async def respond(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON, (b"content-length", b"%d" % len(body)), *headers],
            }
        )
        await self.send({"type": "http.response.body", "body": body})


class ClientGone(Exception):
    """The client disconnected before its request was read."""


class DisconnectWatch:
    """Notices a client that leaves while its request is served, and calls `on_gone` once."""

    __slots__ = ("_handle", "_task", "active", "gone", "on_gone", "receive")

    def __init__(self, receive: Receive, on_gone: Callable[[], None]) -> None:
        self.receive = receive
        self.on_gone = on_gone
        self.gone = False
        self.active = True
        self._task: asyncio.Task[None] | None = None
        self._handle: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            WATCH_AFTER_S, self._start
        )

    def _start(self) -> None:
        self._handle = None
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            continue
        if self.active:
            self.gone = True
            self.on_gone()

    def stop(self) -> None:
        """Idempotent. Drops every reference the watch holds, so that the request's objects
        (the relay refers to the watch and the watch to the relay) are freed at once by
        reference counting instead of waiting, as a cycle, for a garbage collection."""
        self.active = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.on_gone = _nothing


def _nothing() -> None:
    return None


_json = protocols.compact_json


async def send_error(ex: Exchange, api: str, exc: GatewayError, request_id: str) -> None:
    metrics.rejected(exc.code)  # codes are a fixed set: a bounded label
    headers = [(b"x-request-id", request_id.encode())]
    if exc.retry_after is not None:
        headers.append((b"retry-after", b"%d" % exc.retry_after))
    await ex.respond(exc.status, _json(protocols.error_body(api, exc.status, exc.code, exc.message)), headers)


# --- streaming --------------------------------------------------------------------------------


class Relay:
    """Streams a call's chunks as SSE, noticing a client that leaves while tokens are pending."""

    def __init__(self, call: Call, watch: DisconnectWatch) -> None:
        self.call = call
        self.watch = watch
        self.encoder = StreamEncoder(call.request, call.request_id)
        self.client_gone = False
        watch.on_gone = self._gone

    def _gone(self) -> None:
        self.client_gone = True
        self.call.cancel()

    async def run(self, ex: Exchange) -> None:
        try:
            ex.started = True
            headers = [*_SSE_HEADERS, *self.call.headers(with_cost=False)]
            await ex.send({"type": "http.response.start", "status": 200, "headers": headers})
            await self._relay(ex.send)
        finally:
            self.watch.stop()
            if not self.call.finished:  # cancelled from outside (server shutdown): still settle
                self.call.settle_tokens()
                self.call.finish(status="cancelled", http_status=499, finish_reason="cancelled")

    async def _relay(self, send: Send) -> None:
        call = self.call
        chunk: protocols.TokenChunk | None = call.take_first()
        pending: list[bytes] = []  # events that arrived together go out in one write
        try:
            while chunk is not None and chunk.finish_reason is None:
                data = self.encoder.token(chunk)
                if data:
                    pending.append(data)
                if pending and not call.ready():  # about to wait for the backend: send what we have
                    await send({"type": "http.response.body", "body": b"".join(pending), "more_body": True})
                    pending.clear()
                if self.client_gone:
                    break
                chunk = await call.next_chunk()
        except BackendError as exc:
            if not self.client_gone:
                await self._fail(send, exc, b"".join(pending))
                return
        if self.client_gone or chunk is None:
            call.settle_tokens()
            call.finish(status="cancelled", http_status=499, finish_reason="cancelled")
            return
        call.settle_tokens()
        body = self.encoder.final(
            chunk, tokens_in=call.tokens_in, tokens_out=call.tokens_out, extra=call.summary()
        )
        self.watch.stop()
        try:
            await send({"type": "http.response.body", "body": b"".join(pending) + body, "more_body": False})
        finally:  # the ledger and metrics after the last byte left: off the client's critical path
            call.finish(status="ok", http_status=200, finish_reason=chunk.finish_reason or "length")

    async def _fail(self, send: Send, exc: BackendError, pending: bytes = b"") -> None:
        """A stream cut after tokens were sent: an error event, never a clean end; bill what was sent."""
        self.call.settle_tokens()
        self.call.finish(
            status="error",
            http_status=200,
            finish_reason="error",
            error_type=exc.error_type or "stream_error",
        )
        body = self.encoder.error(
            f"the backend stream was interrupted: {exc.message}", "incomplete_generation_stream"
        )
        await send({"type": "http.response.body", "body": pending + body, "more_body": False})


# --- handlers ---------------------------------------------------------------------------------


async def _admitted_call(ex: Exchange, client: ClientRequest, request_id: str) -> Call:
    gateway = await get_gateway()
    principal = await gateway.authenticate(ex.header(b"authorization"))
    call = Call(gateway, principal, client, request_id)
    try:
        await call.admit()
    except GatewayError as exc:
        call.finish(status="rejected", http_status=exc.status, error_type=exc.code)
        raise
    return call


async def _watched(watch: DisconnectWatch, call: Call, work: Awaitable[Any]) -> tuple[Any, bool]:
    """Awaits the backend unless the client leaves first. A watch that sees the client go cancels
    this task (aiohttp then closes the upstream connection, and the backend stops generating);
    the call is settled as cancelled and (None, True) returned."""
    try:
        return await work, False
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not watch.gone or task is None or task.uncancel() > 0:
            raise
        call.settle_tokens(billable=False)
        call.finish(status="cancelled", http_status=499, finish_reason="cancelled")
        return None, True


def _watch(ex: Exchange) -> DisconnectWatch:
    task = asyncio.current_task()
    assert task is not None

    def cancel() -> None:
        task.cancel()

    return DisconnectWatch(ex.receive, cancel)


async def _serve(ex: Exchange, call: Call) -> None:
    watch = _watch(ex)
    try:
        if call.request.stream:
            _, gone = await _watched(watch, call, call.open_stream())
            if not gone:
                await Relay(call, watch).run(ex)  # the relay stops the watch
            return
        completion, gone = await _watched(watch, call, call.complete())
    except GatewayError as exc:
        call.finish(status="error", http_status=exc.status, finish_reason="error", error_type=exc.code)
        raise
    finally:
        watch.stop()  # idempotent: the relay has stopped it already
    if gone:
        return
    call.settle_tokens(completed=completion)
    body = protocols.completion_body(
        call.request,
        call.request_id,
        text=completion.text,
        finish=completion.finish_reason,
        tokens_in=call.tokens_in,
        tokens_out=call.tokens_out,
        extra=call.summary(),
    )
    try:
        await ex.respond(200, _json(body), call.headers(with_cost=True))
    finally:  # the ledger and metrics after the answer left: off the client's critical path
        call.finish(status="ok", http_status=200, finish_reason=completion.finish_reason)


async def chat_completions(ex: Exchange, request_id: str) -> None:
    client = protocols.parse_chat(protocols.parse_json(await ex.body()))
    await _serve(ex, await _admitted_call(ex, client, request_id))


async def completions(ex: Exchange, request_id: str) -> None:
    client = protocols.parse_completion(protocols.parse_json(await ex.body()))
    await _serve(ex, await _admitted_call(ex, client, request_id))


async def embeddings(ex: Exchange, request_id: str) -> None:
    client = protocols.parse_embeddings(protocols.parse_json(await ex.body()))
    call = await _admitted_call(ex, client, request_id)
    watch = _watch(ex)
    try:
        result, gone = await _watched(watch, call, call.embed())
    except GatewayError as exc:
        call.finish(status="error", http_status=exc.status, finish_reason="error", error_type=exc.code)
        raise
    finally:
        watch.stop()
    if gone:
        return
    assert call.prepared is not None
    tokens = result.prompt_tokens or call.prepared.generation.prompt_tokens_estimate
    call.settle_tokens(
        completed=Completion(text="", finish_reason="stop", prompt_tokens=tokens, completion_tokens=0)
    )
    data = [{"object": "embedding", "index": i, "embedding": list(v)} for i, v in enumerate(result.vectors)]
    usage = {"prompt_tokens": call.tokens_in, "total_tokens": call.tokens_in}
    body = {"object": "list", "data": data, "model": client.endpoint, "usage": usage}
    try:
        await ex.respond(200, _json(body), call.headers(with_cost=True))
    finally:
        call.finish(status="ok", http_status=200, finish_reason="stop")


async def models(ex: Exchange, request_id: str) -> None:
    gateway = await get_gateway()
    principal = await gateway.authenticate(ex.header(b"authorization"))
    team = await gateway.catalog.team(principal.team_id)
    if team is None:
        raise Unavailable("the key's team is being changed; retry shortly")
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": team.slug}
        for endpoint_id, name, created in team.endpoints
        if principal.may_call(endpoint_id)
    ]
    await ex.respond(200, _json({"object": "list", "data": data}), [(b"x-request-id", request_id.encode())])


def _tgi(*, stream: bool, compat: bool) -> Callable[[Exchange, str], Awaitable[None]]:
    async def handler(ex: Exchange, request_id: str) -> None:
        body = protocols.parse_json(await ex.body())
        client = protocols.parse_generate(body, endpoint=ex.name, stream=stream, compat=compat)
        await _serve(ex, await _admitted_call(ex, client, request_id))

    return handler


async def endpoint_chat(ex: Exchange, request_id: str) -> None:
    """InferenceClient(base_url=.../endpoints/<name>).chat_completion posts here with model "dummy"."""
    body = protocols.parse_json(await ex.body())
    body["model"] = ex.name
    await _serve(ex, await _admitted_call(ex, protocols.parse_chat(body), request_id))


async def endpoint_info(ex: Exchange, request_id: str) -> None:
    info = {
        "model_id": ex.name,
        "model_sha": None,
        "router": "switchboard",
        "version": "1",
        "max_concurrent_requests": 128,
        "max_best_of": 1,
        "max_stop_sequences": 4,
    }
    await ex.respond(200, _json(info), [])


async def endpoint_health(ex: Exchange, request_id: str) -> None:
    ex.started = True
    await ex.send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
    await ex.send({"type": "http.response.body", "body": b""})


# --- routing ----------------------------------------------------------------------------------

Handler = Callable[[Exchange, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    method: str
    api: Api  # how errors are shaped


_ROUTES = {
    "/v1/chat/completions": Route(chat_completions, "POST", "chat"),
    "/v1/completions": Route(completions, "POST", "completions"),
    "/v1/embeddings": Route(embeddings, "POST", "embeddings"),
    "/v1/models": Route(models, "GET", "chat"),
}
# Under /endpoints/<name>/: the rest of the path. "" is TGI's compat `POST /` (with or without
# the trailing slash).
_ENDPOINT_ROUTES = {
    "generate": Route(_tgi(stream=False, compat=False), "POST", "generate"),
    "generate_stream": Route(_tgi(stream=True, compat=False), "POST", "generate"),
    "v1/chat/completions": Route(endpoint_chat, "POST", "chat"),
    "info": Route(endpoint_info, "GET", "generate"),
    "health": Route(endpoint_health, "GET", "generate"),
    "": Route(_tgi(stream=False, compat=True), "POST", "generate"),
}


def _route(path: str) -> tuple[Route | None, str]:
    found = _ROUTES.get(path)
    if found is not None or not path.startswith("/endpoints/"):
        return found, ""
    name, _, rest = path[len("/endpoints/") :].partition("/")
    return (_ENDPOINT_ROUTES.get(rest) if name else None), name


async def gateway_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry point for /v1/... and /endpoints/...; maps every error to a JSON answer."""
    if scope["type"] != "http":
        return
    route, name = _route(scope["path"])
    ex = Exchange(scope, receive, send, name)
    incoming = ex.header(b"x-request-id")
    # 32 random hex digits, like controlplane.logging's uuid4().hex without building a UUID.
    request_id = new_request_id(incoming) if incoming else os.urandom(16).hex()
    try:
        if route is None:
            raise NotFound(f"no route {scope['path']}: see /v1/models and /api/schema/", code="not_found")
        if scope["method"] != route.method:
            error = GatewayError(f"{scope['path']} takes {route.method}", code="method_not_allowed")
            error.status = 405
            raise error
        await route.handler(ex, request_id)
    except ClientGone:
        return
    except GatewayError as exc:
        if not ex.started:
            await send_error(ex, route.api if route else "chat", exc, request_id)
    except Exception:
        logger.exception("gateway request failed", extra={"request_id": request_id})
        if not ex.started:
            error = GatewayError(f"internal error; quote request id {request_id}")
            await send_error(ex, route.api if route else "chat", error, request_id)
