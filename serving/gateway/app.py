"""The inference routes: a lean Starlette app mounted beside Django (controlplane.asgi_router).

OpenAI-compatible under /v1/, TGI-compatible under /endpoints/<name>/. Handlers parse, call the
pipeline, and encode; they hold no routing, budget or accounting logic of their own.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from controlplane.logging import new_request_id
from serving import metrics
from serving.backends import BackendError
from serving.gateway import protocols
from serving.gateway.errors import GatewayError, Unavailable
from serving.gateway.pipeline import Call
from serving.gateway.protocols import ClientRequest, StreamEncoder
from serving.gateway.runtime import get_gateway
from serving.types import Api, Completion

logger = logging.getLogger(__name__)
_SSE_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no"}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def error_response(api: str, exc: GatewayError, request_id: str) -> Response:
    metrics.REJECTIONS.labels(exc.code).inc()  # codes are a fixed set: a bounded label
    headers = {"x-request-id": request_id}
    if exc.retry_after is not None:
        headers["retry-after"] = str(exc.retry_after)
    return _json(protocols.error_body(api, exc.status, exc.code, exc.message), exc.status, headers)


class RelayResponse(Response):
    """Streams a call's chunks as SSE, noticing a client that leaves while tokens are pending."""

    def __init__(self, call: Call, headers: dict[str, str]) -> None:
        # No super().__init__: that would add a Content-Length of the (empty) initial body.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in {**_SSE_HEADERS, **headers}.items()
        ]
        self.call = call
        self.encoder = StreamEncoder(call.request, call.request_id)
        self.client_gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.create_task(self._watch(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await self._relay(send)
        finally:
            watcher.cancel()
            if not self.call.finished:  # cancelled from outside (server shutdown): still settle
                self.call.settle_tokens()
                self.call.finish(status="cancelled", http_status=499, finish_reason="cancelled")

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            continue
        self.client_gone = True
        self.call.cancel()

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
        call.finish(status="ok", http_status=200, finish_reason=chunk.finish_reason or "length")
        await send({"type": "http.response.body", "body": b"".join(pending) + body, "more_body": False})

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


async def _principal_and_call(request: Request, client: ClientRequest, request_id: str) -> Call:
    gateway = await get_gateway()
    principal = await gateway.authenticate(request.headers.get("authorization"))
    call = Call(gateway, principal, client, request_id)
    try:
        await call.admit()
    except GatewayError as exc:
        call.finish(status="rejected", http_status=exc.status, error_type=exc.code)
        raise
    return call


async def _serve(call: Call) -> Response:
    try:
        if call.request.stream:
            await call.open_stream()
            return RelayResponse(call, call.headers(with_cost=False))
        completion = await call.complete()
    except GatewayError as exc:
        call.finish(status="error", http_status=exc.status, finish_reason="error", error_type=exc.code)
        raise
    call.settle_tokens(completed=completion)
    call.finish(status="ok", http_status=200, finish_reason=completion.finish_reason)
    body = protocols.completion_body(
        call.request,
        call.request_id,
        text=completion.text,
        finish=completion.finish_reason,
        tokens_in=call.tokens_in,
        tokens_out=call.tokens_out,
        extra=call.summary(),
    )
    return _json(body, headers=call.headers(with_cost=True))


Handler = Callable[[Request, str], Awaitable[Response]]


def _endpoint_route(api: Api) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wraps a handler with a request id and the error → response mapping."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            request_id = new_request_id(request.headers.get("x-request-id"))
            try:
                return await handler(request, request_id)
            except GatewayError as exc:
                return error_response(api, exc, request_id)
            except Exception:
                logger.exception("gateway request failed", extra={"request_id": request_id})
                error = GatewayError(f"internal error; quote request id {request_id}")
                return error_response(api, error, request_id)

        return route

    return wrap


@_endpoint_route("chat")
async def chat_completions(request: Request, request_id: str) -> Response:
    client = protocols.parse_chat(protocols.parse_json(await request.body()))
    return await _serve(await _principal_and_call(request, client, request_id))


@_endpoint_route("completions")
async def completions(request: Request, request_id: str) -> Response:
    client = protocols.parse_completion(protocols.parse_json(await request.body()))
    return await _serve(await _principal_and_call(request, client, request_id))


@_endpoint_route("embeddings")
async def embeddings(request: Request, request_id: str) -> Response:
    client = protocols.parse_embeddings(protocols.parse_json(await request.body()))
    call = await _principal_and_call(request, client, request_id)
    try:
        result = await call.embed()
    except GatewayError as exc:
        call.finish(status="error", http_status=exc.status, finish_reason="error", error_type=exc.code)
        raise
    assert call.prepared is not None
    tokens = result.prompt_tokens or call.prepared.generation.prompt_tokens_estimate
    call.settle_tokens(
        completed=Completion(text="", finish_reason="stop", prompt_tokens=tokens, completion_tokens=0)
    )
    call.finish(status="ok", http_status=200, finish_reason="stop")
    data = [{"object": "embedding", "index": i, "embedding": list(v)} for i, v in enumerate(result.vectors)]
    usage = {"prompt_tokens": call.tokens_in, "total_tokens": call.tokens_in}
    body = {"object": "list", "data": data, "model": client.endpoint, "usage": usage}
    return _json(body, headers=call.headers(with_cost=True))


@_endpoint_route("chat")
async def models(request: Request, request_id: str) -> Response:
    gateway = await get_gateway()
    principal = await gateway.authenticate(request.headers.get("authorization"))
    team = await gateway.catalog.team(principal.team_id)
    if team is None:
        raise Unavailable("the key's team is being changed; retry shortly")
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": team.slug}
        for endpoint_id, name, created in team.endpoints
        if principal.may_call(endpoint_id)
    ]
    return _json({"object": "list", "data": data}, headers={"x-request-id": request_id})


def _tgi(*, stream: bool, compat: bool) -> Callable[[Request], Awaitable[Response]]:
    @_endpoint_route("generate")
    async def handler(request: Request, request_id: str) -> Response:
        body = protocols.parse_json(await request.body())
        client = protocols.parse_generate(
            body, endpoint=request.path_params["name"], stream=stream, compat=compat
        )
        return await _serve(await _principal_and_call(request, client, request_id))

    return handler


@_endpoint_route("chat")
async def endpoint_chat(request: Request, request_id: str) -> Response:
    """InferenceClient(base_url=.../endpoints/<name>).chat_completion posts here with model "dummy"."""
    body = protocols.parse_json(await request.body())
    body["model"] = request.path_params["name"]
    client = protocols.parse_chat(body)
    return await _serve(await _principal_and_call(request, client, request_id))


async def endpoint_info(request: Request) -> Response:
    name = request.path_params["name"]
    return JSONResponse(
        {
            "model_id": name,
            "model_sha": None,
            "router": "switchboard",
            "version": "1",
            "max_concurrent_requests": 128,
            "max_best_of": 1,
            "max_stop_sequences": 4,
        }
    )


async def endpoint_health(request: Request) -> Response:
    return Response(status_code=200)


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
    Route("/endpoints/{name}/generate", _tgi(stream=False, compat=False), methods=["POST"]),
    Route("/endpoints/{name}/generate_stream", _tgi(stream=True, compat=False), methods=["POST"]),
    Route("/endpoints/{name}/v1/chat/completions", endpoint_chat, methods=["POST"]),
    Route("/endpoints/{name}/info", endpoint_info, methods=["GET"]),
    Route("/endpoints/{name}/health", endpoint_health, methods=["GET"]),
    Route("/endpoints/{name}/", _tgi(stream=False, compat=True), methods=["POST"]),
    Route("/endpoints/{name}", _tgi(stream=False, compat=True), methods=["POST"]),
]

# A bare Router, not a Starlette app: no middleware stack on the hot path (errors are mapped in
# each route). The lifespan is the project router's (controlplane.asgi_router.lifespan_app).
gateway_app = Router(routes=routes)
