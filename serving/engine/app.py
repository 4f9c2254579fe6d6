"""The ASGI application: TGI's routes (this module) plus the OpenAI-style and embedding routes.

A lean Starlette app (no Django): the handlers parse, admit, and render; generation itself
happens on the scheduler thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from serving.engine import flow, payloads
from serving.engine.embeddings import Embedder
from serving.engine.flow import EngineError, GenerationInput, handles_errors
from serving.engine.http import (
    KEEPALIVE,
    EventStreamResponse,
    error_response,
    json_response,
    parse_body,
    run_until_disconnect,
    sse_event,
)
from serving.engine.params import ErrorEvent, FinalEvent
from serving.engine.schemas import CompatGenerateRequest, GenerateParameters, GenerateRequest
from serving.engine.service import EngineService

log = logging.getLogger(__name__)


class TGIRoutes:
    def __init__(self, service: EngineService) -> None:
        self.service = service

    def routes(self) -> list[Route]:
        h = handles_errors
        return [
            Route("/", h(self.compat_generate), methods=["POST"]),
            Route("/", self.health, methods=["GET"]),
            Route("/generate", h(self.generate), methods=["POST"]),
            Route("/generate_stream", h(self.generate_stream), methods=["POST"]),
            Route("/tokenize", h(self.tokenize), methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/ping", self.health, methods=["GET"]),
            Route("/info", self.info, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
        ]

    async def compat_generate(self, request: Request) -> Response:
        body = await parse_body(request, CompatGenerateRequest)
        # No Hub pipeline tag for a local folder, so TGI defaults return_full_text to true here.
        if body.stream:
            return self._stream_response(body, default_full_text=True)
        response = await self._generate(request, body, default_full_text=True)
        return json_response([response[0]], headers=response[1])

    async def generate(self, request: Request) -> Response:
        body = await parse_body(request, GenerateRequest)
        payload, headers = await self._generate(request, body, default_full_text=False)
        return json_response(payload, headers=headers)

    async def generate_stream(self, request: Request) -> Response:
        body = await parse_body(request, GenerateRequest)
        return self._stream_response(body, default_full_text=False)

    async def _generate(
        self, request: Request, body: GenerateRequest, *, default_full_text: bool
    ) -> tuple[dict[str, Any], dict[str, str]]:
        self.service.metrics.request_count.inc()
        permit = flow.acquire(self.service)
        try:
            item = GenerationInput(body.inputs, body.parameters, default_return_full_text=default_full_text)
            work = asyncio.ensure_future(flow.generate(self.service, item))
            timed, final = await run_until_disconnect(request, work)
        finally:
            permit.release()
        headers = payloads.timing_headers(
            timed.validated, final, timed.arrived_at, timed.validated_at, self.service.compute_type
        )
        return payloads.generate_json(timed.validated, final), headers

    def _stream_response(self, body: GenerateRequest, *, default_full_text: bool) -> Response:
        self.service.metrics.request_count.inc()
        item = GenerationInput(body.inputs, body.parameters, default_return_full_text=default_full_text)
        headers = {
            "x-compute-type": self.service.compute_type,
            "x-compute-characters": str(len(body.inputs)),
            "x-accel-buffering": "no",
        }
        return EventStreamResponse(self._stream_events(item), headers=headers)

    async def _stream_events(self, item: GenerationInput) -> AsyncGenerator[bytes, None]:
        """SSE bytes for /generate_stream; every failure is an event in the 200 stream."""
        p = item.parameters
        try:
            if p.best_of is not None and p.best_of != 1:
                raise flow.validation_error("`best_of` != 1 is not supported when streaming tokens")
            if p.decoder_input_details:
                raise flow.validation_error(
                    "`decoder_input_details` == true is not supported when streaming tokens"
                )
            permit = flow.acquire(self.service)
        except EngineError as exc:
            if exc.error_type == "validation":
                self.service.metrics.request_failure.inc(err="validation")
            yield sse_event(exc.body())
            return
        try:
            timed = await flow.validate(self.service, item)
            index = 0
            async with contextlib.aclosing(flow.stream(self.service, timed)) as events:
                async for event in events:
                    if event is None:
                        yield KEEPALIVE
                    elif isinstance(event, ErrorEvent):
                        yield sse_event(flow.generation_error(event).body())
                    else:
                        index += 1
                        final = event if isinstance(event, FinalEvent) else None
                        yield sse_event(
                            payloads.stream_token_json(
                                index, event.token, event.top_tokens, timed.validated, final
                            )
                        )
        except EngineError as exc:
            yield sse_event(exc.body())
        finally:
            permit.release()

    async def tokenize(self, request: Request) -> Response:
        body = await parse_body(request, GenerateRequest)
        loop = asyncio.get_running_loop()
        tokens = await loop.run_in_executor(None, self._tokenize, body)
        return json_response(tokens)

    def _tokenize(self, body: GenerateRequest) -> list[dict[str, Any]]:
        ids, offsets = self.service.loaded.codec.encode_with_offsets(body.inputs)
        if body.parameters.truncate:
            ids, offsets = ids[-body.parameters.truncate :], offsets[-body.parameters.truncate :]
        raw = body.inputs.encode()
        # Offsets are byte offsets on the wire (TGI slices the UTF-8 input in Rust).
        byte_at = _char_to_byte_offsets(body.inputs)
        out = []
        for token_id, (start, stop) in zip(ids, offsets, strict=True):
            b_start, b_stop = byte_at[start], byte_at[stop]
            out.append(
                {
                    "id": token_id,
                    "text": raw[b_start:b_stop].decode(errors="replace"),
                    "start": b_start,
                    "stop": b_stop,
                }
            )
        return out

    async def health(self, request: Request) -> Response:
        if await self._healthy():
            return Response(status_code=200)
        return error_response(503, "unhealthy", "healthcheck")

    async def _healthy(self) -> bool:
        scheduler = self.service.scheduler
        if not scheduler.alive:
            return False
        if not scheduler.last_step_failed:
            return True
        # After a failed forward pass, prove the model works again with a one-token generation,
        # as TGI's health check does.
        probe = GenerationInput("health", GenerateParameters(max_new_tokens=1))
        try:
            await flow.generate(self.service, probe)
        except EngineError:
            return False
        return True

    async def info(self, request: Request) -> Response:
        return json_response(info_json(self.service))

    async def metrics(self, request: Request) -> Response:
        return PlainTextResponse(self.service.metrics.render(), media_type="text/plain; version=0.0.4")

    async def models(self, request: Request) -> Response:
        model_id = self.service.model_id
        data = [{"id": model_id, "object": "model", "created": 0, "owned_by": model_id}]
        return json_response({"object": "list", "data": data})


def info_json(service: EngineService) -> dict[str, Any]:
    c, loaded = service.config, service.loaded
    return {
        "model_id": service.model_id,
        "model_sha": None,
        "model_pipeline_tag": None,
        "max_concurrent_requests": c.max_concurrent_requests,
        "max_best_of": c.max_best_of,
        "max_stop_sequences": c.max_stop_sequences,
        "max_input_tokens": c.max_input_tokens,
        "max_total_tokens": c.max_total_tokens,
        "validation_workers": c.validation_workers,
        "max_client_batch_size": c.max_client_batch_size,
        "router": "switchboard-engine",
        "version": payloads.TGI_VERSION,
        "sha": None,
        "docker_label": None,
        # TGI 2.x fields, harmless to clients and useful to operators.
        "model_dtype": str(loaded.dtype).removeprefix("torch."),
        "model_device_type": loaded.device.type,
        "waiting_served_ratio": c.waiting_served_ratio,
        "max_batch_total_tokens": c.max_batch_total_tokens,
        "max_batch_prefill_tokens": c.max_batch_prefill_tokens,
        "max_waiting_tokens": c.max_waiting_tokens,
        "max_batch_size": c.max_batch_size,
        "max_input_length": c.max_input_tokens,
        # Switchboard's own fields.
        "model_path": str(loaded.path),
        "demo_model": loaded.note is not None,
        "note": loaded.note,
        "embedding_model": service.embedding_model_id,
    }


def _char_to_byte_offsets(text: str) -> list[int]:
    offsets = [0]
    for char in text:
        offsets.append(offsets[-1] + len(char.encode()))
    return offsets


def create_app(service: EngineService, embedder: Embedder | None = None) -> Starlette:
    from serving.engine.embeddings import EmbeddingRoutes
    from serving.engine.openai_routes import OpenAIRoutes

    routes = TGIRoutes(service).routes() + OpenAIRoutes(service).routes()
    if embedder is not None:
        routes += EmbeddingRoutes(embedder).routes()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncGenerator[None, None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    return Starlette(routes=routes, lifespan=lifespan)
