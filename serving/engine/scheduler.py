"""Continuous batching in the manner of TGI's router, on one dedicated thread.

The event loop only enqueues requests and reads events; every forward pass, token choice and
detokenisation happens on the scheduler thread. Between decode steps the thread may prefill
waiting requests and merge them into the running batch (within the prefill and total token
budgets, paced by `waiting_served_ratio` and `max_waiting_tokens`); after every step it drops
rows that finished or whose client went away, which frees their KV memory.

Events go back to the loop with one `call_soon_threadsafe` per step, carrying every row's event,
so the loop wakes once per step rather than once per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from serving.engine import batch as padded
from serving.engine.metrics import EngineMetrics
from serving.engine.model import LoadedModel
from serving.engine.params import (
    ErrorEvent,
    Event,
    FinalEvent,
    FinishReason,
    GenerationRequest,
    PrefillToken,
    Token,
    TokenEvent,
)
from serving.engine.sampling import Choice, RowSampler, choose

log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True)
class BatchSnapshot:
    """What the running batch holds right now (for metrics, tests and debugging)."""

    size: int
    length: int
    kv_bytes: int
    waiting: int


@dataclass(frozen=True)
class BatchLimits:
    max_batch_total_tokens: int
    max_batch_prefill_tokens: int
    waiting_served_ratio: float = 0.3
    max_waiting_tokens: int = 20
    max_batch_size: int | None = None


class RequestHandle:
    """The event-loop end of one request: where its events arrive, and how to cancel it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # `None` is the service's keep-alive marker; the scheduler only ever puts events.
        self.events: asyncio.Queue[Event | None] = asyncio.Queue()
        # A plain attribute: written by the loop, read by the scheduler thread at its next step.
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class _Entry:
    request: GenerationRequest
    handle: RequestHandle
    queued_at: float


@dataclass
class _Sequence:
    entry: _Entry
    sampler: RowSampler
    all_ids: list[int]
    prefix_offset: int
    read_offset: int
    started_at: float
    text: str = ""
    tokens: list[Token] = field(default_factory=list)
    top_tokens: list[tuple[Token, ...]] = field(default_factory=list)
    prefill: tuple[PrefillToken, ...] = ()

    @property
    def generated(self) -> int:
        return len(self.tokens)

    @property
    def remaining(self) -> int:
        return self.entry.request.stopping.max_new_tokens - self.generated


class Scheduler:
    def __init__(self, loaded: LoadedModel, limits: BatchLimits, metrics: EngineMetrics) -> None:
        self.loaded = loaded
        self.limits = limits
        self.metrics = metrics
        self._waiting: deque[_Entry] = deque()
        self._wakeup = threading.Condition()
        self._running: list[_Sequence] = []
        self._batch: padded.PaddedBatch | None = None
        self._waiting_steps = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="engine-scheduler", daemon=True)
        self._detok = _Detokenizer(loaded)
        self.last_step_failed = False
        metrics.batch_max_total_tokens.set(limits.max_batch_total_tokens)

    # ----- called from the event loop -------------------------------------------------------
    def start(self) -> None:
        self.warm_up()
        self._thread.start()

    def warm_up(self) -> None:
        """Run a prefill, a merge and a few decode steps once, before the port opens.

        The first forward passes pay for kernel selection and allocator growth (~0.5 s on CPU);
        without this the first client's time to first token would carry that cost.
        """
        model = self.loaded.model
        with torch.inference_mode():
            first, _ = padded.prefill(model, [(1, 2, 3, 4), (5, 6)], reserve=4)
            second, _ = padded.prefill(model, [(7, 8, 9, 10, 11)], reserve=4)
            padded.concatenate(first, second, reserve=4)
            for _ in range(3):
                padded.decode(model, first, prebuilt_mask=self.loaded.prebuilt_decode_mask)
            padded.select(first, [0, 2], reserve=1)

    def stop(self) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def snapshot(self) -> BatchSnapshot:
        batch = self._batch
        return BatchSnapshot(
            size=batch.size if batch else 0,
            length=batch.length if batch else 0,
            kv_bytes=batch.kv_bytes if batch else 0,
            waiting=len(self._waiting),
        )

    def submit(self, request: GenerationRequest, handle: RequestHandle) -> None:
        with self._wakeup:
            self._waiting.append(_Entry(request, handle, time.time()))
            self.metrics.queue_size.set(len(self._waiting))
            self._wakeup.notify()

    # ----- scheduler thread -----------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            self.step()

    def step(self) -> None:
        """One iteration of the scheduling loop. The thread calls it forever; tests may call it
        directly on a scheduler that was never started, to control arrivals step by step."""
        with torch.inference_mode():
            try:
                self._step()
            except Exception as exc:  # a model failure must not kill the thread
                log.exception("generation failed")
                self._fail_running(f"Request failed during generation: {exc}")

    def _step(self) -> None:
        if self._batch is None:
            entries = self._take(min_size=None)
            if not entries:
                self._idle_wait()
                return
            self._batch, self._running = self._prefill(entries)
            self._waiting_steps = 0
            return
        self._drop_cancelled()
        if self._batch is None:
            return
        self._maybe_join()
        self._decode()

    def _idle_wait(self) -> None:
        if not self._thread.is_alive():
            return  # driven by hand (tests): never block the caller
        with self._wakeup:
            if not self._waiting and not self._stopping:
                self._wakeup.wait(timeout=1.0)

    def _maybe_join(self) -> None:
        assert self._batch is not None
        waited_enough = self._waiting_steps >= self.limits.max_waiting_tokens
        min_size = (
            None if waited_enough else math.floor(len(self._running) * self.limits.waiting_served_ratio)
        )
        entries = self._take(min_size=min_size)
        if not entries:
            return
        self.metrics.batch_concat.inc(reason="wait_exceeded" if waited_enough else "backpressure")
        new_batch, new_rows = self._prefill(entries)
        if new_batch is None:
            return
        started = time.perf_counter()
        self._running = self._running + new_rows
        padded.concatenate(self._batch, new_batch, reserve=self._reserve())
        self.metrics.batch_concat_duration.observe(time.perf_counter() - started, method="concatenate")
        self._waiting_steps = 0
        self._publish_batch_gauges()

    def _take(self, *, min_size: int | None) -> list[_Entry]:
        """Pop the longest FIFO prefix of the queue that fits the budgets (TGI's next_batch)."""
        size, width, steps = self._running_shape()
        limits = self.limits
        chosen: list[_Entry] = []
        new_width, new_steps = 0, 0
        with self._wakeup:
            while self._waiting:
                entry = self._waiting[0]
                if entry.handle.cancelled:
                    self._waiting.popleft()
                    self.metrics.request_failure.inc(err="dropped")
                    continue
                if limits.max_batch_size is not None and size + len(chosen) >= limits.max_batch_size:
                    break
                cand_width = max(new_width, entry.request.input_length)
                cand_steps = max(new_steps, entry.request.stopping.max_new_tokens - 1)
                prefill_tokens = (len(chosen) + 1) * cand_width
                # Worst case of the merged batch: every row padded to the widest row and grown by
                # the longest remaining generation. Bounding this bounds the KV memory.
                total = (size + len(chosen) + 1) * (max(width, cand_width) + max(steps, cand_steps))
                if prefill_tokens > limits.max_batch_prefill_tokens or total > limits.max_batch_total_tokens:
                    break
                chosen.append(self._waiting.popleft())
                new_width, new_steps = cand_width, cand_steps
            if min_size is not None and len(chosen) < min_size:
                self._waiting.extendleft(reversed(chosen))
                chosen = []
            self.metrics.queue_size.set(len(self._waiting))
        return chosen

    def _reserve(self) -> int:
        return max((s.remaining for s in self._running), default=0)

    def _running_shape(self) -> tuple[int, int, int]:
        if self._batch is None or not self._running:
            return 0, 0, 0
        return len(self._running), self._batch.length, max(s.remaining for s in self._running)

    def _prefill(self, entries: list[_Entry]) -> tuple[padded.PaddedBatch | None, list[_Sequence]]:
        now = time.time()
        rows = [self._new_sequence(e, now) for e in entries]
        self.metrics.batch_next_size.observe(len(rows))
        prompts = [e.request.input_ids for e in entries]
        full_logits = any(e.request.decoder_input_details for e in entries)
        # Columns for every step these rows may still take; a batch that runs alone needs no more.
        reserve = max(e.request.stopping.max_new_tokens for e in entries)
        started = time.perf_counter()
        try:
            batch, logits = self._timed_forward(
                "prefill",
                lambda: padded.prefill(
                    self.loaded.model,
                    prompts,
                    reserve=reserve,
                    max_tokens=self.limits.max_batch_total_tokens,
                    full_logits=full_logits,
                ),
            )
            if full_logits:
                for row, seq in enumerate(rows):
                    if seq.entry.request.decoder_input_details:
                        seq.prefill = self._prefill_tokens(seq.entry.request.input_ids, logits[row])
                logits = logits[:, -1, :]
            result = self._advance("prefill", batch, rows, logits)
        except Exception as exc:
            log.exception("prefill failed")
            self._fail(rows, f"Request failed during generation: {exc}")
            return None, []
        self.metrics.batch_inference_duration.observe(time.perf_counter() - started, method="prefill")
        return result

    def _decode(self) -> None:
        assert self._batch is not None
        batch = self._batch
        started = time.perf_counter()
        try:
            logits = self._timed_forward(
                "decode",
                lambda: padded.decode(
                    self.loaded.model, batch, prebuilt_mask=self.loaded.prebuilt_decode_mask
                ),
            )
            self._batch, self._running = self._advance("decode", batch, self._running, logits)
        except Exception as exc:
            log.exception("decode failed")
            self._fail_running(f"Request failed during generation: {exc}")
            return
        self.metrics.batch_inference_duration.observe(time.perf_counter() - started, method="decode")
        self._waiting_steps += 1
        self._publish_batch_gauges()

    def _timed_forward(self, method: str, forward: Callable[[], _T]) -> _T:
        self.metrics.batch_inference_count.inc(method=method)
        started = time.perf_counter()
        try:
            result = forward()
        except Exception:
            self.metrics.batch_inference_failure.inc(method=method)
            self.last_step_failed = True
            raise
        self.metrics.batch_forward_duration.observe(time.perf_counter() - started, method=method)
        self.metrics.batch_inference_success.inc(method=method)
        self.last_step_failed = False
        return result

    def _advance(
        self, method: str, batch: padded.PaddedBatch, rows: list[_Sequence], logits: torch.Tensor
    ) -> tuple[padded.PaddedBatch | None, list[_Sequence]]:
        """Choose each row's next token, send events, and drop the rows that are done."""
        started = time.perf_counter()
        choices = choose(logits, [s.sampler for s in rows], [s.entry.request.top_n_tokens for s in rows])
        batch.set_next_ids(
            torch.tensor([c.token_id for c in choices], dtype=torch.long, device=logits.device)
        )
        deliveries: list[tuple[RequestHandle, Event]] = []
        keep: list[int] = []
        for index, (seq, choice) in enumerate(zip(rows, choices, strict=True)):
            event = self._record(seq, choice)
            deliveries.append((seq.entry.handle, event))
            if not isinstance(event, FinalEvent):
                keep.append(index)
        _deliver(deliveries)
        self.metrics.batch_decode_duration.observe(time.perf_counter() - started, method=method)
        return self._filter(batch, rows, keep)

    def _filter(
        self, batch: padded.PaddedBatch, rows: list[_Sequence], keep: list[int]
    ) -> tuple[padded.PaddedBatch | None, list[_Sequence]]:
        if not keep:
            return None, []
        if len(keep) == len(rows):
            return batch, rows
        started = time.perf_counter()
        kept_rows = [rows[i] for i in keep]
        reserve = max(s.remaining for s in kept_rows)
        order = padded.select(batch, keep, reserve=reserve)
        self.metrics.batch_filter_duration.observe(time.perf_counter() - started, method="filter")
        return batch, [rows[i] for i in order]

    def _drop_cancelled(self) -> None:
        assert self._batch is not None
        keep = [i for i, seq in enumerate(self._running) if not seq.entry.handle.cancelled]
        dropped = len(self._running) - len(keep)
        if dropped:
            self.metrics.request_failure.inc(dropped, err="dropped")
            self._batch, self._running = self._filter(self._batch, self._running, keep)
            self._publish_batch_gauges()

    def _publish_batch_gauges(self) -> None:
        size, width, steps = self._running_shape()
        self.metrics.batch_current_size.set(size)
        self.metrics.batch_current_max_tokens.set(size * (width + steps))

    # ----- per-sequence bookkeeping ---------------------------------------------------------
    def _new_sequence(self, entry: _Entry, now: float) -> _Sequence:
        request = entry.request
        sampler = RowSampler.create(
            request.sampling, request.input_ids, self.loaded.vocab_size, self.loaded.device
        )
        length = request.input_length
        return _Sequence(
            entry=entry,
            sampler=sampler,
            all_ids=list(request.input_ids),
            prefix_offset=max(length - 5, 0),
            read_offset=length,
            started_at=now,
        )

    def _record(self, seq: _Sequence, choice: Choice) -> Event:
        seq.sampler.observe(choice.token_id)
        seq.all_ids.append(choice.token_id)
        token = Token(
            id=choice.token_id,
            text=self._detok.next_text(seq),
            logprob=choice.logprob,
            special=choice.token_id in self.loaded.special_ids,
        )
        top = tuple(self._detok.token(i, lp) for i, lp in choice.top)
        seq.tokens.append(token)
        seq.top_tokens.append(top)
        seq.text += token.text
        finish = self._finish_reason(seq, token)
        if finish is None:
            return TokenEvent(token, top)
        return self._final(seq, token, top, finish)

    def _finish_reason(self, seq: _Sequence, token: Token) -> FinishReason | None:
        stopping = seq.entry.request.stopping
        if seq.generated >= stopping.max_new_tokens:
            return FinishReason.LENGTH
        if token.id in self.loaded.eos_ids:
            return FinishReason.EOS_TOKEN
        # TGI matches `re.escape(stop) + "$"` on the streamed text, i.e. the text must end with it.
        if any(seq.text.endswith(stop) for stop in stopping.stop_sequences):
            return FinishReason.STOP_SEQUENCE
        return None

    def _final(
        self, seq: _Sequence, token: Token, top: tuple[Token, ...], finish: FinishReason
    ) -> FinalEvent:
        sampling = seq.entry.request.sampling
        generated_ids = [t.id for t in seq.tokens]
        return FinalEvent(
            token=token,
            top_tokens=top,
            generated_text=self._detok.final_text(generated_ids),
            generated_tokens=seq.generated,
            finish_reason=finish,
            seed=sampling.seed if sampling.do_sample else None,
            tokens=tuple(seq.tokens),
            all_top_tokens=tuple(seq.top_tokens),
            prefill=seq.prefill,
            queued_at=seq.entry.queued_at,
            started_at=seq.started_at,
            finished_at=time.time(),
        )

    def _prefill_tokens(self, prompt: tuple[int, ...], logits: torch.Tensor) -> tuple[PrefillToken, ...]:
        """Logprob of each prompt token given the ones before it (the first has none: null)."""
        rows = logits[-len(prompt) :].float()
        logprobs = torch.log_softmax(rows[:-1], dim=-1)
        targets = torch.tensor(prompt[1:], dtype=torch.long, device=logprobs.device)
        picked = logprobs.gather(1, targets[:, None]).squeeze(1).tolist() if len(prompt) > 1 else []
        values: list[float | None] = [None, *picked]
        return tuple(PrefillToken(i, self._detok.piece(i), lp) for i, lp in zip(prompt, values, strict=True))

    # ----- failures -------------------------------------------------------------------------
    def _fail_running(self, message: str) -> None:
        rows, self._running, self._batch = self._running, [], None
        self._fail(rows, message)
        self._publish_batch_gauges()

    def _fail(self, rows: list[_Sequence], message: str) -> None:
        self.metrics.request_failure.inc(len(rows), err="generation")
        _deliver([(seq.entry.handle, ErrorEvent(message)) for seq in rows])


class _Detokenizer:
    """TGI's incremental detokenisation: emit text only once it is complete UTF-8."""

    def __init__(self, loaded: LoadedModel) -> None:
        self._tokenizer = loaded.tokenizer
        # The Rust backend's decode is several times cheaper than the Python wrapper's, and it is
        # called twice per token per row on the scheduler thread.
        backend = getattr(loaded.tokenizer, "backend_tokenizer", None)
        self._decode: Callable[[list[int]], str] = (
            (lambda ids: backend.decode(ids, skip_special_tokens=False))
            if backend is not None
            else (lambda ids: loaded.tokenizer.decode(ids, skip_special_tokens=False))
        )
        self._special = loaded.special_ids

    def next_text(self, seq: _Sequence) -> str:
        ids = seq.all_ids
        prefix = self._decode(ids[seq.prefix_offset : seq.read_offset])
        text = self._decode(ids[seq.prefix_offset :])
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            seq.prefix_offset, seq.read_offset = seq.read_offset, len(ids)
            return text[len(prefix) :]
        return ""

    def piece(self, token_id: int) -> str:
        return self._decode([token_id])

    def token(self, token_id: int, logprob: float) -> Token:
        return Token(token_id, self.piece(token_id), logprob, token_id in self._special)

    def final_text(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))


def _deliver(deliveries: list[tuple[RequestHandle, Event]]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[RequestHandle, Event]]] = {}
    for handle, event in deliveries:
        if not handle.cancelled:
            by_loop.setdefault(handle.loop, []).append((handle, event))
    for loop, items in by_loop.items():
        # A closed loop (shutdown) raises RuntimeError; nobody is listening any more then.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_put_all, items)


def _put_all(items: list[tuple[RequestHandle, Event]]) -> None:
    for handle, event in items:
        handle.events.put_nowait(event)
