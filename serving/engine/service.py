"""The engine as the HTTP handlers see it: admission, validation, and a per-request event stream.

Admission is TGI's: a fixed number of permits taken without waiting, *before* validation, so an
overloaded engine answers 429 at once and its queue can never grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from serving.engine.config import EngineConfig
from serving.engine.metrics import EngineMetrics
from serving.engine.model import LoadedModel
from serving.engine.params import ErrorEvent, Event, FinalEvent
from serving.engine.scheduler import BatchLimits, RequestHandle, Scheduler
from serving.engine.schemas import GenerateParameters
from serving.engine.validation import ValidatedGenerate, ValidationLimits, validate_generate

KEEPALIVE_SECONDS = 15.0


class Overloaded(Exception):
    """No permit was free: TGI's 429 `overloaded`."""


@dataclass
class Permit:
    engine: EngineService
    count: int
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.engine.in_flight -= self.count


@dataclass(frozen=True)
class Timed:
    validated: ValidatedGenerate
    arrived_at: float
    validated_at: float


class EngineService:
    def __init__(self, loaded: LoadedModel, config: EngineConfig) -> None:
        self.loaded = loaded
        self.config = config
        self.model_id = config.model_id or loaded.model_id
        # TGI reports $COMPUTE_TYPE (default "gpu+optimized") in x-compute-type; here the device.
        self.compute_type = os.environ.get("COMPUTE_TYPE", loaded.device.type)
        self.embedding_model_id: str | None = None  # set when an embedder is served beside the model
        self.metrics = EngineMetrics(
            max_input_tokens=config.max_input_tokens, max_total_tokens=config.max_total_tokens
        )
        self.limits = ValidationLimits(
            max_input_tokens=config.max_input_tokens,
            max_total_tokens=config.max_total_tokens,
            max_best_of=config.max_best_of,
            max_stop_sequences=config.max_stop_sequences,
            max_top_n_tokens=config.max_top_n_tokens,
        )
        self.scheduler = Scheduler(
            loaded,
            BatchLimits(
                max_batch_total_tokens=config.max_batch_total_tokens,
                max_batch_prefill_tokens=config.max_batch_prefill_tokens,
                waiting_served_ratio=config.waiting_served_ratio,
                max_waiting_tokens=config.max_waiting_tokens,
                max_batch_size=config.max_batch_size,
            ),
            self.metrics,
        )
        self.in_flight = 0  # only touched on the event loop, so no lock
        self._validation_pool = ThreadPoolExecutor(
            config.validation_workers, thread_name_prefix="engine-validate"
        )

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()
        self._validation_pool.shutdown(wait=False, cancel_futures=True)

    def acquire(self, count: int = 1) -> Permit:
        if self.in_flight + count > self.config.max_concurrent_requests:
            self.metrics.request_failure.inc(err="overloaded")
            raise Overloaded("Model is overloaded")
        self.in_flight += count
        return Permit(self, count)

    async def validate(
        self,
        inputs: str,
        parameters: GenerateParameters,
        *,
        add_special_tokens: bool = True,
        default_return_full_text: bool = False,
    ) -> Timed:
        arrived = time.time()
        loop = asyncio.get_running_loop()
        validated = await loop.run_in_executor(
            self._validation_pool,
            lambda: validate_generate(
                inputs,
                parameters,
                self.limits,
                self.loaded.codec,
                add_special_tokens=add_special_tokens,
                default_return_full_text=default_return_full_text,
            ),
        )
        self.metrics.validation_duration.observe(time.time() - arrived)
        self.metrics.input_length.observe(validated.request.input_length)
        self.metrics.max_new_tokens.observe(validated.request.stopping.max_new_tokens)
        return Timed(validated, arrived, time.time())

    async def events(self, timed: Timed) -> AsyncGenerator[Event | None, None]:
        """The request's events until it ends; `None` marks 15 s of silence (SSE keep-alive).

        Leaving the iteration early (client gone, task cancelled) cancels the request, and the
        scheduler drops it at its next step.
        """
        loop = asyncio.get_running_loop()
        handle = RequestHandle(loop)
        keepalive = KeepAlive(loop, handle.events)
        self.scheduler.submit(timed.validated.request, handle)
        try:
            while True:
                event = await handle.events.get()
                keepalive.seen()
                if isinstance(event, FinalEvent):
                    self._record_success(timed, event)
                yield event
                if isinstance(event, FinalEvent | ErrorEvent):
                    return
        finally:
            keepalive.stop()
            handle.cancel()

    async def run(self, timed: Timed) -> FinalEvent | ErrorEvent:
        async with contextlib.aclosing(self.events(timed)) as events:
            async for event in events:
                if isinstance(event, FinalEvent | ErrorEvent):
                    return event
        raise RuntimeError("event stream ended without a final event")

    def _record_success(self, timed: Timed, final: FinalEvent) -> None:
        m = self.metrics
        m.request_success.inc()
        m.request_duration.observe(final.finished_at - timed.arrived_at)
        m.queue_duration.observe(max(final.started_at - final.queued_at, 0.0))
        inference = final.finished_at - final.started_at
        m.inference_duration.observe(inference)
        m.time_per_token.observe(inference / max(final.generated_tokens, 1))
        m.generated_tokens.observe(final.generated_tokens)


class KeepAlive:
    """Puts `None` into a request's queue after 15 s without events (an SSE keep-alive comment).

    One timer per 15 s per request, instead of arming and cancelling a timeout around every
    token wait.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Event | None],
        interval: float = KEEPALIVE_SECONDS,
    ) -> None:
        self._loop, self._queue, self._interval = loop, queue, interval
        self._last = loop.time()
        self._timer = loop.call_later(interval, self._tick)

    def seen(self) -> None:
        self._last = self._loop.time()

    def stop(self) -> None:
        self._timer.cancel()

    def _tick(self) -> None:
        silent = self._loop.time() - self._last
        if silent >= self._interval:
            self._queue.put_nowait(None)
            self._last = self._loop.time()
            silent = 0.0
        self._timer = self._loop.call_later(self._interval - silent, self._tick)
