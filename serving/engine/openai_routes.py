"""`/v1/chat/completions` and `/v1/completions`, as TGI serves them (router/src/server.rs).

Both map onto an ordinary generation. Errors found before streaming starts (template, tools,
suffix, batch size) are plain HTTP errors; errors after that (validation, overload, generation)
arrive inside the 200 stream in OpenAI's shape, followed by `[DONE]`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving.engine import flow, payloads
from serving.engine.flow import EngineError, GenerationInput, handles_errors
from serving.engine.http import (
    KEEPALIVE,
    SSE_DONE,
    EventStreamResponse,
    json_response,
    parse_body,
    run_until_disconnect,
    sse_event,
)
from serving.engine.params import ErrorEvent, FinalEvent, Token
from serving.engine.schemas import ChatRequest, CompletionRequest, GenerateParameters, Grammar, Message
from serving.engine.service import EngineService, Timed

COMPLETIONS_DEFAULT_MAX_TOKENS = 100  # TGI: `max_tokens.or(Some(100))`


@dataclass(frozen=True)
class ChatPlan:
    item: GenerationInput
    model: str
    logprobs: bool
    include_usage: bool


class OpenAIRoutes:
    def __init__(self, service: EngineService) -> None:
        self.service = service

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", handles_errors(self.chat), methods=["POST"]),
            Route("/v1/completions", handles_errors(self.completions), methods=["POST"]),
        ]

    # ----- chat ------------------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        body = await parse_body(request, ChatRequest)
        self.service.metrics.request_count.inc()
        plan = await self._chat_plan(body)
        if body.stream:
            headers = {"x-compute-type": self.service.compute_type}
            return EventStreamResponse(self._chat_events(plan), headers=headers)
        permit = flow.acquire(self.service)
        try:
            work = asyncio.ensure_future(flow.generate(self.service, plan.item))
            timed, final = await run_until_disconnect(request, work)
        finally:
            permit.release()
        return json_response(
            payloads.chat_completion_json(
                plan.model, final.generated_text, final, timed.validated.request.input_length, plan.logprobs
            )
        )

    async def _chat_plan(self, body: ChatRequest) -> ChatPlan:
        if body.tools:
            self.service.metrics.request_failure.inc(err="template")
            raise EngineError(422, "Tool error: tools are not supported by this engine", "tool_error")
        loop = asyncio.get_running_loop()
        prompt = await loop.run_in_executor(None, self._render, body.messages)
        logprobs = bool(body.logprobs)
        return ChatPlan(
            item=GenerationInput(prompt, chat_parameters(body), add_special_tokens=False),
            model=body.model if body.model and body.model != "tgi" else self.service.model_id,
            logprobs=logprobs,
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
        )

    def _render(self, messages: list[Message]) -> str:
        tokenizer = self.service.loaded.tokenizer
        if not self.service.loaded.has_chat_template:
            self.service.metrics.request_failure.inc(err="template")
            raise EngineError(422, "Template error: template not found", "template_error")
        try:
            return str(
                tokenizer.apply_chat_template(
                    [_message_dict(m) for m in messages], tokenize=False, add_generation_prompt=True
                )
            )
        except Exception as exc:  # jinja2 raises many types; all are the template's fault
            self.service.metrics.request_failure.inc(err="template")
            raise EngineError(422, f"Template error: {exc}", "template_error") from exc

    async def _chat_events(self, plan: ChatPlan) -> AsyncGenerator[bytes, None]:
        try:
            permit = flow.acquire(self.service)
        except EngineError as exc:
            yield sse_event(payloads.openai_stream_error(exc.message))
            yield SSE_DONE
            return
        try:
            timed = await flow.validate(self.service, plan.item)
            async with contextlib.aclosing(flow.stream(self.service, timed)) as events:
                async for event in events:
                    if event is None:
                        yield KEEPALIVE
                    elif isinstance(event, ErrorEvent):
                        yield sse_event(payloads.openai_stream_error(event.message))
                    else:
                        final = event if isinstance(event, FinalEvent) else None
                        yield sse_event(
                            payloads.chat_chunk_json(
                                plan.model, event.token, event.top_tokens, final, plan.logprobs
                            )
                        )
                        if final is not None and plan.include_usage:
                            prompt_tokens = timed.validated.request.input_length
                            yield sse_event(
                                payloads.chat_usage_chunk_json(
                                    plan.model, prompt_tokens, final.generated_tokens
                                )
                            )
        except EngineError as exc:
            yield sse_event(payloads.openai_stream_error(exc.message))
        finally:
            permit.release()
        yield SSE_DONE

    # ----- completions -------------------------------------------------------------------------
    async def completions(self, request: Request) -> Response:
        body = await parse_body(request, CompletionRequest)
        self.service.metrics.request_count.inc()
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        self._check_completion_request(body, prompts)
        model = body.model if body.model and body.model != "tgi" else self.service.model_id
        items = [GenerationInput(p, completion_parameters(body)) for p in prompts]
        if body.stream:
            return EventStreamResponse(
                self._completion_events(items, model), headers={"x-compute-type": self.service.compute_type}
            )
        permit = flow.acquire(self.service, len(items))
        try:
            work = asyncio.ensure_future(asyncio.gather(*(flow.generate(self.service, i) for i in items)))
            results = await run_until_disconnect(request, work)
        finally:
            permit.release()
        return json_response(_completion_response(model, results))

    def _check_completion_request(self, body: CompletionRequest, prompts: list[str]) -> None:
        limit = self.service.config.max_client_batch_size
        if body.suffix is not None:
            self.service.metrics.request_failure.inc(err="validation")
            raise EngineError(
                422,
                "Suffix is not supported and can be achieved by preprocessing the prompt.",
                "suffix not supported",
            )
        if len(prompts) > limit:
            self.service.metrics.request_failure.inc(err="validation")
            raise EngineError(
                422,
                f"Number of prompts exceeds the maximum allowed batch size of {limit}",
                "batch size exceeded",
            )

    async def _completion_events(
        self, items: list[GenerationInput], model: str
    ) -> AsyncGenerator[bytes, None]:
        try:
            permit = flow.acquire(self.service, len(items))
        except EngineError as exc:
            yield sse_event(payloads.openai_stream_error(exc.message))
            yield SSE_DONE
            return
        try:
            streams = [self._one_completion_stream(index, item, model) for index, item in enumerate(items)]
            async with contextlib.aclosing(_merge(streams)) as merged:
                async for chunk in merged:
                    yield chunk
        finally:
            permit.release()
        yield SSE_DONE

    async def _one_completion_stream(
        self, index: int, item: GenerationInput, model: str
    ) -> AsyncGenerator[bytes, None]:
        try:
            timed = await flow.validate(self.service, item)
            async with contextlib.aclosing(flow.stream(self.service, timed)) as events:
                async for event in events:
                    if event is None:
                        yield KEEPALIVE
                    elif isinstance(event, ErrorEvent):
                        yield sse_event(payloads.openai_stream_error(event.message))
                    else:
                        yield sse_event(_completion_chunk(index, event.token, event, model, timed))
        except EngineError as exc:
            yield sse_event(payloads.openai_stream_error(exc.message))


def _completion_chunk(index: int, token: Token, event: object, model: str, timed: Timed) -> dict[str, Any]:
    if isinstance(event, FinalEvent):
        # The last event of each prompt is TGI's CompletionFinal: raw finish reason, with usage.
        choice = payloads.completion_choice(index, token.text, event.finish_reason.value)
        usage = payloads.usage_json(timed.validated.request.input_length, event.generated_tokens)
        return payloads.completion_json(model, [choice], usage)
    return payloads.completion_json(model, [payloads.completion_choice(index, token.text, "")], None)


def _completion_response(model: str, results: list[tuple[Timed, FinalEvent]]) -> dict[str, Any]:
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for index, (timed, final) in enumerate(results):
        finish = payloads.openai_finish_reason(final.finish_reason)
        choices.append(payloads.completion_choice(index, final.generated_text, finish))
        prompt_tokens += timed.validated.request.input_length
        completion_tokens += final.generated_tokens
    return payloads.completion_json(model, choices, payloads.usage_json(prompt_tokens, completion_tokens))


async def _merge(streams: Sequence[AsyncIterator[bytes]]) -> AsyncGenerator[bytes, None]:
    """Interleave several streams in arrival order (one per prompt); closing it closes them all."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def drain(stream: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in stream:
                await queue.put(chunk)
        finally:
            await queue.put(None)

    tasks = [asyncio.ensure_future(drain(s)) for s in streams]
    try:
        remaining = len(tasks)
        while remaining:
            chunk = await queue.get()
            if chunk is None:
                remaining -= 1
            else:
                yield chunk
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _greedy_and_temperature(temperature: float | None) -> tuple[bool, float | None]:
    """TGI's OpenAI mapping: temperature 0 means greedy; anything else, or none, samples."""
    if temperature is not None and temperature == 0.0:
        return False, None
    return True, temperature


def _stops(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def chat_parameters(body: ChatRequest) -> GenerateParameters:
    do_sample, temperature = _greedy_and_temperature(body.temperature)
    max_new = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    return GenerateParameters(
        do_sample=do_sample,
        temperature=temperature,
        top_p=body.top_p,
        seed=body.seed,
        frequency_penalty=body.frequency_penalty,
        repetition_penalty=body.presence_penalty + 2.0 if body.presence_penalty is not None else None,
        max_new_tokens=max_new,
        stop=_stops(body.stop),
        top_n_tokens=body.top_logprobs if body.logprobs else None,
        details=True,
        grammar=Grammar(type="json", value=body.response_format)
        if body.response_format is not None
        else None,
    )


def completion_parameters(body: CompletionRequest) -> GenerateParameters:
    do_sample, temperature = _greedy_and_temperature(body.temperature)
    return GenerateParameters(
        do_sample=do_sample,
        temperature=temperature,
        top_p=body.top_p,
        seed=body.seed,
        repetition_penalty=body.repetition_penalty,
        frequency_penalty=body.frequency_penalty,
        max_new_tokens=body.max_tokens if body.max_tokens is not None else COMPLETIONS_DEFAULT_MAX_TOKENS,
        stop=_stops(body.stop),
        details=True,
    )


def _message_dict(message: Message) -> dict[str, Any]:
    content = message.content
    if isinstance(content, list):
        content = "".join(chunk.text for chunk in content if chunk.type == "text")
    result: dict[str, Any] = {"role": message.role, "content": content or ""}
    if message.name is not None:
        result["name"] = message.name
    return result
