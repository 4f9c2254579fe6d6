"""The KV buffer operations (prefill, decode, join, leave) against each row run alone.

A seeded random walk of joins and leaves exercises every path: in-place joins, joins that need
wider or larger buffers, leaves that trim padding columns and leaves that shrink the buffers.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import torch

from serving.engine import batch as padded
from serving.engine.model import LoadedModel, load_model


@pytest.fixture(scope="module")
def demo() -> LoadedModel:
    torch.set_num_threads(1)  # tiny matrices: one thread is faster, and robust on a busy machine
    return load_model("default")


def solo_tokens(model: Any, prompt: tuple[int, ...], steps: int) -> list[int]:
    batch, logits = padded.prefill(model, [prompt], reserve=steps)
    tokens = [int(logits.argmax(-1))]
    for _ in range(steps - 1):
        batch.set_next_ids(torch.tensor(tokens[-1:]))
        tokens.append(int(padded.decode(model, batch).argmax(-1)))
    return tokens


def counting(monkeypatch: pytest.MonkeyPatch, name: str) -> dict[str, int]:
    calls = {"n": 0}
    original: Callable[..., Any] = getattr(padded, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(padded, name, wrapper)
    return calls


@torch.inference_mode()
@pytest.mark.parametrize(("seed", "prebuilt_mask"), [(7, False), (11, True)])
def test_random_joins_and_leaves_match_solo_runs(
    demo: LoadedModel, monkeypatch: pytest.MonkeyPatch, seed: int, prebuilt_mask: bool
) -> None:
    """Rows join with random prompt lengths and leave after random lengths, as in the scheduler."""
    rng = random.Random(seed)
    paths = {name: counting(monkeypatch, name) for name in ("_reallocate", "_move_row")}
    model = demo.model
    batch: padded.PaddedBatch | None = None
    rows: list[dict[str, Any]] = []
    done: list[dict[str, Any]] = []
    for _step in range(60):
        if batch is None or (len(rows) < 8 and rng.random() < 0.3):
            new_rows = [
                {
                    "prompt": tuple(rng.randrange(5, 4000) for _ in range(rng.choice([3, 6, 12, 30, 60]))),
                    "limit": rng.randrange(4, 25),
                }
                for _ in range(rng.choice([1, 2]))
            ]
            new, logits = padded.prefill(model, [r["prompt"] for r in new_rows], reserve=40)
            first = logits.argmax(-1)
            new.set_next_ids(first)
            for row, token in zip(new_rows, first.tolist(), strict=True):
                row["tokens"] = [token]
            rows = rows + new_rows
            if batch is None:
                batch = new
            else:
                reserve = max(r["limit"] - len(r["tokens"]) for r in rows)
                padded.concatenate(batch, new, reserve=reserve)
        leaving = [i for i, r in enumerate(rows) if len(r["tokens"]) >= r["limit"]]
        if leaving:
            done += [rows[i] for i in leaving]
            keep = [i for i in range(len(rows)) if i not in leaving]
            if not keep:
                batch, rows = None, []
                continue
            reserve = max(rows[i]["limit"] - len(rows[i]["tokens"]) for i in keep)
            order = padded.select(batch, keep, reserve=reserve)
            rows = [rows[i] for i in order]
        tokens = padded.decode(model, batch, prebuilt_mask=prebuilt_mask).argmax(-1)
        batch.set_next_ids(tokens)
        for row, token in zip(rows, tokens.tolist(), strict=True):
            row["tokens"].append(token)
        assert batch.attention_mask.shape == (len(rows), batch.length)
    assert len(done) > 8
    for row in rows + done:
        assert row["tokens"] == solo_tokens(model, row["prompt"], len(row["tokens"]))
    assert all(calls["n"] > 0 for calls in paths.values()), paths


@torch.inference_mode()
def test_wider_row_joins_in_place_after_a_long_row_left(
    demo: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    widened = counting(monkeypatch, "_widen_in_place")
    reallocated = counting(monkeypatch, "_reallocate")
    model = demo.model
    long_prompt, short_prompt, medium_prompt = tuple(range(5, 65)), (7, 8, 9, 10, 11), tuple(range(100, 120))
    batch, logits = padded.prefill(model, [long_prompt, short_prompt], reserve=40)
    short_tokens = [int(logits[1].argmax())]
    batch.set_next_ids(logits.argmax(-1))
    for _ in range(2):
        step = padded.decode(model, batch).argmax(-1)
        batch.set_next_ids(step)
        short_tokens.append(int(step[1]))
    order = padded.select(batch, [1], reserve=30)  # the long row leaves; its columns go out of view
    assert order == [1] and batch.start > 0 and batch.length < len(medium_prompt)
    new, new_logits = padded.prefill(model, [medium_prompt], reserve=30)
    medium_tokens = [int(new_logits.argmax(-1))]
    new.set_next_ids(new_logits.argmax(-1))
    padded.concatenate(batch, new, reserve=30)
    for _ in range(5):
        step = padded.decode(model, batch).argmax(-1)
        batch.set_next_ids(step)
        short_tokens.append(int(step[0]))
        medium_tokens.append(int(step[1]))
    assert (widened["n"], reallocated["n"]) == (1, 0)
    assert short_tokens == solo_tokens(model, short_prompt, len(short_tokens))
    assert medium_tokens == solo_tokens(model, medium_prompt, len(medium_tokens))
