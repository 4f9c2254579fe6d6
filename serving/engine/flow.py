"""One generation from the handler's point of view: permit, validation, events, typed failures.

Shared by the TGI routes and the OpenAI-style routes, so that both count metrics, release
permits and map errors identically.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from serving.engine.http import BodyRejected, ClientGone, error_response
from serving.engine.params import ErrorEvent, Event, FinalEvent
from serving.engine.schemas import GenerateParameters
from serving.engine.service import EngineService, Overloaded, Permit, Timed
from serving.engine.validation import ValidationFailure

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class GenerationInput:
    inputs: str
    parameters: GenerateParameters
    add_special_tokens: bool = True
    default_return_full_text: bool = False


class EngineError(Exception):
    """An error TGI returns as `{"error", "error_type"}` with an HTTP status."""

    def __init__(self, status: int, message: str, error_type: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type

    def body(self) -> dict[str, str]:
        return {"error": self.message, "error_type": self.error_type}


def overloaded() -> EngineError:
    return EngineError(429, "Model is overloaded", "overloaded")


def acquire(service: EngineService, count: int = 1) -> Permit:
    try:
        return service.acquire(count)
    except Overloaded as exc:
        raise overloaded() from exc


async def validate(service: EngineService, item: GenerationInput) -> Timed:
    try:
        return await service.validate(
            item.inputs,
            item.parameters,
            add_special_tokens=item.add_special_tokens,
            default_return_full_text=item.default_return_full_text,
        )
    except ValidationFailure as exc:
        service.metrics.request_failure.inc(err="validation")
        raise validation_error(str(exc)) from exc


def validation_error(message: str) -> EngineError:
    return EngineError(422, f"Input validation error: {message}", "validation")


def generation_error(event: ErrorEvent) -> EngineError:
    return EngineError(424, event.message, "generation")


async def generate(service: EngineService, item: GenerationInput) -> tuple[Timed, FinalEvent]:
    """Non-streaming: the caller already holds a permit. Raises EngineError on failure."""
    timed = await validate(service, item)
    result = await service.run(timed)
    if isinstance(result, ErrorEvent):
        raise generation_error(result)
    return timed, result


async def stream(service: EngineService, timed: Timed) -> AsyncGenerator[Event | None, None]:
    """Token events, closed (and so cancelled) however the consumer stops."""
    async with contextlib.aclosing(service.events(timed)) as events:
        async for event in events:
            yield event


def handles_errors(handler: Handler) -> Handler:
    """Turn the typed failures into TGI's responses: plain text for bodies, JSON otherwise."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except BodyRejected as exc:
            return exc.response()
        except EngineError as exc:
            return error_response(exc.status, exc.message, exc.error_type)
        except ClientGone:
            return Response(status_code=499)  # nobody is left to read it

    return wrapped
