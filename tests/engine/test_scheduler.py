"""The scheduler driven step by step (no thread, no HTTP): batching equivalence, budgets,
pacing, cancellation, failures. Arrivals are pinned to steps, so every batch is exact."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from serving.engine.model import LoadedModel, load_model
from serving.engine.params import FinishReason, SamplingParams
from serving.engine.scheduler import BatchLimits
from tests.engine.scheduler_driver import Driver, Outcome, make_request

PROMPTS = {
    "a": "Hello operator, please connect me",
    "b": "The switchboard connects callers to the line they ask for.",
    "c": "def generate(prompt: str) -> str:",
    "d": "1, 2, 3, 4, 5",
    "e": "What is the capital of France?",
}
LONG = "An operator listens, plugs a cord into the right jack, and rings the other end. " * 12


@pytest.fixture(scope="module")
def demo() -> LoadedModel:
    torch.set_num_threads(1)  # tiny matrices: one thread is faster, and robust on a busy machine
    return load_model("default")


@pytest.fixture
def driver(demo: LoadedModel) -> Iterator[Driver]:
    d = Driver(demo)
    yield d
    d.close()


def solo(
    demo: LoadedModel, text: str, max_new_tokens: int, sampling: SamplingParams | None = None
) -> Outcome:
    d = Driver(demo)
    try:
        return d.run({0: [("x", make_request(demo, text, max_new_tokens, sampling))]})["x"]
    finally:
        d.close()


def assert_same_generation(batched: Outcome, alone: Outcome) -> None:
    assert batched.token_ids == alone.token_ids
    # Left padding with the right positions and masks changes nothing but float rounding.
    assert batched.logprobs == pytest.approx(alone.logprobs, abs=1e-4)


@pytest.mark.parametrize(
    "arrivals",
    [
        pytest.param({0: ["a", "b", "c", "d"]}, id="all-at-once"),
        pytest.param({0: ["a"], 3: ["b"], 6: ["c", "d"], 11: ["e"]}, id="staggered"),
        pytest.param({0: ["a", "b"], 5: ["long"], 9: ["c"]}, id="long-prompt-joins-short"),
    ],
)
def test_request_joining_a_running_batch_generates_what_it_would_alone(
    demo: LoadedModel, driver: Driver, arrivals: dict[int, list[str]]
) -> None:
    lengths = {"a": 24, "b": 10, "c": 16, "d": 12, "e": 20, "long": 15}
    texts = {**PROMPTS, "long": LONG}
    plan = {
        step: [(name, make_request(demo, texts[name], lengths[name])) for name in names]
        for step, names in arrivals.items()
    }
    outcomes = driver.run(plan)
    assert max(s.size for s in driver.snapshots) > 1, "requests must actually share a batch"
    for name, outcome in outcomes.items():
        assert len(outcome.token_ids) == lengths[name]
        assert_same_generation(outcome, solo(demo, texts[name], lengths[name]))
    assert len({tuple(o.token_ids) for o in outcomes.values()}) == len(outcomes), (
        "prompts give different text"
    )


def test_seeded_sampling_is_the_same_alone_and_batched(demo: LoadedModel, driver: Driver) -> None:
    sampling = SamplingParams(do_sample=True, temperature=0.9, top_k=40, top_p=0.95, seed=1234)
    plan = {
        0: [("a", make_request(demo, PROMPTS["a"], 20))],
        2: [("s", make_request(demo, PROMPTS["b"], 12, sampling))],
        4: [("c", make_request(demo, PROMPTS["c"], 20, dataclasses.replace(sampling, seed=99)))],
    }
    outcomes = driver.run(plan)
    alone = solo(demo, PROMPTS["b"], 12, sampling)
    assert outcomes["s"].token_ids == alone.token_ids
    assert outcomes["s"].final is not None and outcomes["s"].final.seed == 1234


def test_finished_rows_leave_and_padding_columns_are_trimmed(demo: LoadedModel, driver: Driver) -> None:
    plan = {0: [("long", make_request(demo, LONG, 3)), ("short", make_request(demo, PROMPTS["d"], 30))]}
    driver.run(plan)
    sizes = [s.size for s in driver.snapshots]
    lengths = [s.length for s in driver.snapshots]
    assert sizes[0] == 2 and 1 in sizes and sizes[-1] == 0
    # While the long prompt was in the batch the short row was padded to its length; once it left,
    # the padding columns went with it and the KV cache shrank accordingly.
    row = sizes.index(1)
    assert lengths[row] < lengths[row - 1]
    assert driver.snapshots[row].kv_bytes < driver.snapshots[row - 1].kv_bytes / 2


def test_cancelled_request_is_dropped_at_the_next_step_and_frees_its_memory(
    demo: LoadedModel, driver: Driver
) -> None:
    driver.submit("keep", make_request(demo, PROMPTS["a"], 40))
    driver.submit("gone", make_request(demo, LONG, 40))
    for _ in range(4):
        driver.step()
    before = driver.snapshots[-1]
    driver.cancel("gone")
    driver.step()
    after = driver.snapshots[-1]
    assert (before.size, after.size) == (2, 1)
    assert after.kv_bytes < before.kv_bytes / 2
    assert driver.metrics.request_failure.value(err="dropped") == 1
    driver.run({})
    assert len(driver.outcomes["keep"].token_ids) == 40
    assert driver.outcomes["gone"].final is None


def test_cancelled_while_waiting_never_runs(demo: LoadedModel, driver: Driver) -> None:
    driver.submit("gone", make_request(demo, PROMPTS["a"], 5))
    driver.cancel("gone")
    driver.step()
    assert driver.snapshots[-1].size == 0 and driver.snapshots[-1].waiting == 0
    assert driver.outcomes["gone"].events == []
    assert driver.metrics.request_failure.value(err="dropped") == 1


def test_token_budget_bounds_the_batch_and_later_requests_wait(demo: LoadedModel) -> None:
    request = make_request(demo, PROMPTS["a"], 30)
    worst_case = request.input_length + 30 - 1  # one row's final cache length
    limits = BatchLimits(
        max_batch_total_tokens=3 * worst_case, max_batch_prefill_tokens=4096, waiting_served_ratio=0.0
    )
    driver = Driver(demo, limits)
    try:
        outcomes = driver.run({0: [(f"r{i}", request) for i in range(5)]})
        assert max(s.size for s in driver.snapshots) == 3
        assert max(s.size * s.length for s in driver.snapshots) <= limits.max_batch_total_tokens
        assert all(len(o.token_ids) == 30 for o in outcomes.values())
        # FIFO: the two that did not fit start only after the first three have finished.
        assert outcomes["r3"].first_step > outcomes["r0"].last_step  # type: ignore[operator]
    finally:
        driver.close()


def test_prefill_budget_splits_a_burst_into_several_prefills(demo: LoadedModel) -> None:
    request = make_request(demo, PROMPTS["b"], 4)
    limits = BatchLimits(
        max_batch_total_tokens=16000,
        max_batch_prefill_tokens=2 * request.input_length,
        waiting_served_ratio=0.0,
    )
    driver = Driver(demo, limits)
    try:
        driver.run({0: [(f"r{i}", request) for i in range(6)]})
        assert driver.metrics.batch_next_size.count() == 3
        assert driver.metrics.batch_inference_count.value(method="prefill") == 3
    finally:
        driver.close()


def test_waiting_served_ratio_defers_joins_until_max_waiting_tokens(demo: LoadedModel) -> None:
    limits = BatchLimits(16000, 4096, waiting_served_ratio=1.0, max_waiting_tokens=5)
    driver = Driver(demo, limits)
    try:
        plan: dict[int, list[tuple[str, Any]]] = {
            0: [("a", make_request(demo, PROMPTS["a"], 30)), ("b", make_request(demo, PROMPTS["b"], 30))],
            2: [("late", make_request(demo, PROMPTS["c"], 5))],
        }
        outcomes = driver.run(plan)
        # With 2 running and ratio 1.0, one waiting request is not enough to pause the batch;
        # it joins once the batch has decoded max_waiting_tokens steps without a join.
        assert outcomes["late"].first_step == 7  # arrived before step 3; joined in step 7
        assert driver.metrics.batch_concat.value(reason="wait_exceeded") == 1
        assert driver.metrics.batch_concat.value(reason="backpressure") == 0
    finally:
        driver.close()


def test_eos_token_finishes_with_eos_reason(demo: LoadedModel) -> None:
    first = solo(demo, PROMPTS["a"], 3).token_ids
    with_eos = dataclasses.replace(
        demo, eos_ids=frozenset({first[1]}), special_ids=demo.special_ids | {first[1]}
    )
    outcome = solo(with_eos, PROMPTS["a"], 10)
    assert outcome.final is not None
    assert outcome.final.finish_reason is FinishReason.EOS_TOKEN
    assert outcome.final.generated_tokens == 2
    assert outcome.final.tokens[-1].special is True


def test_a_failing_forward_pass_fails_the_batch_and_the_scheduler_recovers(demo: LoadedModel) -> None:
    class FaultyModel:
        """Fault injection: the real model, except that its Nth forward pass raises."""

        def __init__(self, model: Any, fail_on_call: int) -> None:
            self.model, self.calls, self.fail_on_call = model, 0, fail_on_call
            self.device = model.device

        def __call__(self, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self.fail_on_call:
                raise RuntimeError("injected fault")
            return self.model(**kwargs)

    faulty = dataclasses.replace(demo, model=FaultyModel(demo.model, fail_on_call=4))
    driver = Driver(faulty)
    try:
        outcomes = driver.run(
            {
                0: [("a", make_request(demo, PROMPTS["a"], 10))],
                1: [("b", make_request(demo, PROMPTS["b"], 10))],
            }
        )
        assert outcomes["a"].error is not None and "injected fault" in outcomes["a"].error.message
        assert outcomes["b"].error is not None
        assert driver.scheduler.last_step_failed
        assert driver.metrics.request_failure.value(err="generation") == 2
        after = driver.run({driver.step_count: [("c", make_request(demo, PROMPTS["c"], 5))]})["c"]
        assert after.final is not None and after.token_ids == solo(demo, PROMPTS["c"], 5).token_ids
        assert not driver.scheduler.last_step_failed
    finally:
        driver.close()


def test_demo_model_matches_transformers_generate(demo: LoadedModel) -> None:
    ids = demo.tokenizer(PROMPTS["b"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        reference = demo.model.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=None)
    assert solo(demo, PROMPTS["b"], 20).token_ids == reference[0, ids.shape[1] :].tolist()
