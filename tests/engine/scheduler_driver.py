"""Drive a `Scheduler` by hand, step by step, without its thread and without HTTP.

Arrivals are pinned to step numbers, so batch compositions are exact and repeatable, which is
what the batching-equivalence tests need.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from serving.engine.metrics import EngineMetrics
from serving.engine.model import LoadedModel
from serving.engine.params import (
    ErrorEvent,
    Event,
    FinalEvent,
    GenerationRequest,
    SamplingParams,
    StoppingParams,
    TokenEvent,
)
from serving.engine.scheduler import BatchLimits, BatchSnapshot, RequestHandle, Scheduler


def make_request(
    loaded: LoadedModel, text: str, max_new_tokens: int, sampling: SamplingParams | None = None
) -> GenerationRequest:
    """Greedy unless `sampling` says otherwise."""
    ids = tuple(loaded.tokenizer(text)["input_ids"])
    return GenerationRequest(ids, sampling or SamplingParams(do_sample=False), StoppingParams(max_new_tokens))


@dataclass
class Outcome:
    events: list[Event] = field(default_factory=list)
    first_step: int | None = None
    last_step: int | None = None

    @property
    def token_ids(self) -> list[int]:
        return [e.token.id for e in self.events if isinstance(e, TokenEvent | FinalEvent)]

    @property
    def logprobs(self) -> list[float]:
        return [e.token.logprob for e in self.events if isinstance(e, TokenEvent | FinalEvent)]

    @property
    def final(self) -> FinalEvent | None:
        last = self.events[-1] if self.events else None
        return last if isinstance(last, FinalEvent) else None

    @property
    def error(self) -> ErrorEvent | None:
        last = self.events[-1] if self.events else None
        return last if isinstance(last, ErrorEvent) else None

    @property
    def done(self) -> bool:
        return self.final is not None or self.error is not None


class Driver:
    def __init__(self, loaded: LoadedModel, limits: BatchLimits | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.metrics = EngineMetrics(max_input_tokens=2047, max_total_tokens=2048)
        self.scheduler = Scheduler(
            loaded,
            limits
            or BatchLimits(
                max_batch_total_tokens=16000, max_batch_prefill_tokens=4096, waiting_served_ratio=0.0
            ),
            self.metrics,
        )
        self.handles: dict[str, RequestHandle] = {}
        self.outcomes: dict[str, Outcome] = {}
        self.step_count = 0
        self.snapshots: list[BatchSnapshot] = []

    def submit(self, name: str, request: GenerationRequest) -> None:
        handle = RequestHandle(self.loop)
        self.handles[name] = handle
        self.outcomes[name] = Outcome()
        self.scheduler.submit(request, handle)

    def cancel(self, name: str) -> None:
        self.handles[name].cancel()

    def step(self) -> None:
        self.scheduler.step()
        self.step_count += 1
        self.loop.run_until_complete(asyncio.sleep(0))  # runs the call_soon_threadsafe deliveries
        for name, handle in self.handles.items():
            outcome = self.outcomes[name]
            while not handle.events.empty():
                outcome.events.append(handle.events.get_nowait())
                outcome.first_step = outcome.first_step if outcome.first_step is not None else self.step_count
                outcome.last_step = self.step_count
        self.snapshots.append(self.scheduler.snapshot())

    def run(
        self, arrivals: dict[int, list[tuple[str, GenerationRequest]]], max_steps: int = 2000
    ) -> dict[str, Outcome]:
        """Submit each arrival before the given step, then step until every request is done."""
        for _ in range(max_steps):
            for name, request in arrivals.get(self.step_count, []):
                self.submit(name, request)
            pending = any(step > self.step_count for step in arrivals)
            if not pending and all(o.done or self.handles[n].cancelled for n, o in self.outcomes.items()):
                return self.outcomes
            self.step()
        raise AssertionError("requests did not finish")

    def close(self) -> None:
        self.loop.close()
