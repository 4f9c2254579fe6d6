"""Next-token choice for a batch: penalties, warpers and sampling, row by row where needed.

Rows that are plain greedy share one batched argmax; only rows with penalties or sampling pay
for per-row work. Each sampling row draws from its own `torch.Generator`, so a seeded request
produces the same tokens whatever else is in the batch.

Order and semantics follow TGI: repetition penalty, frequency penalty, then temperature, top-k,
top-p and typical-p; the reported logprob is taken after the warpers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from serving.engine.params import SamplingParams


@dataclass
class RowSampler:
    """Per-sequence sampling state, owned by the scheduler thread."""

    params: SamplingParams
    vocab_size: int
    device: torch.device
    counts: torch.Tensor | None = None
    seen: int = 0
    generator: torch.Generator | None = field(default=None, repr=False)

    @classmethod
    def create(
        cls, params: SamplingParams, prompt: tuple[int, ...], vocab_size: int, device: torch.device
    ) -> RowSampler:
        sampler = cls(params=params, vocab_size=vocab_size, device=device)
        if params.repetition_penalty != 1.0 or params.frequency_penalty != 0.0:
            sampler.counts = torch.zeros(vocab_size, dtype=torch.float32, device=device)
            ids = torch.tensor(prompt, dtype=torch.long, device=device).clamp(max=vocab_size - 1)
            sampler.counts.index_add_(0, ids, torch.ones(len(prompt), device=device))
            sampler.seen = len(prompt)
        if params.do_sample:
            sampler.generator = torch.Generator(device=device)
            sampler.generator.manual_seed(params.seed)
        return sampler

    def observe(self, token_id: int) -> None:
        if self.counts is not None and token_id < self.vocab_size:
            self.counts[token_id] += 1.0
            self.seen += 1

    def process(self, scores: torch.Tensor) -> torch.Tensor:
        """Penalties and warpers applied to one row of logits (1-D)."""
        p = self.params
        if self.counts is not None:
            scores = _penalize(scores, self.counts, self.seen, p)
        if not p.do_sample:
            return scores
        if p.temperature != 1.0:
            scores = scores / p.temperature
        if p.top_k > 0:
            scores = _top_k(scores, p.top_k)
        if p.top_p < 1.0:
            scores = _top_p(scores, p.top_p)
        if p.typical_p < 1.0:
            scores = _typical_p(scores, p.typical_p)
        return scores

    def draw(self, logprobs: torch.Tensor) -> int:
        probs = logprobs.exp()
        return int(torch.multinomial(probs, 1, generator=self.generator).item())


@dataclass(frozen=True)
class Choice:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]


def choose(logits: torch.Tensor, samplers: list[RowSampler], top_n: list[int]) -> list[Choice]:
    """Pick one token per row of `logits` ([batch, vocab])."""
    scores = logits.float()
    processed = [i for i, s in enumerate(samplers) if s.params.needs_processing]
    if processed:
        scores = scores.clone()
        for i in processed:
            scores[i] = samplers[i].process(scores[i])
    logprobs = torch.log_softmax(scores, dim=-1)
    ids = logprobs.argmax(dim=-1).tolist()
    for i in processed:
        if samplers[i].params.do_sample:
            ids[i] = samplers[i].draw(logprobs[i])
    picked = logprobs.gather(1, torch.tensor(ids, device=logprobs.device)[:, None]).squeeze(1).tolist()
    return [Choice(ids[i], picked[i], _top(logprobs[i], top_n[i])) for i in range(len(ids))]


def _top(row: torch.Tensor, n: int) -> tuple[tuple[int, float], ...]:
    if n <= 0:
        return ()
    values, indices = torch.topk(row, n)
    return tuple(zip(indices.tolist(), values.tolist(), strict=True))


def _penalize(scores: torch.Tensor, counts: torch.Tensor, seen: int, p: SamplingParams) -> torch.Tensor:
    if p.repetition_penalty != 1.0:
        present = counts > 0
        penalized = torch.where(scores < 0, scores * p.repetition_penalty, scores / p.repetition_penalty)
        scores = torch.where(present, penalized, scores)
    if p.frequency_penalty != 0.0 and seen > 0:
        # TGI's heterogeneous processor: the penalty scales with each token's share of the sequence.
        scores = scores - p.frequency_penalty * counts / seen
    return scores


def _top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, scores.numel())
    threshold = torch.topk(scores, k).values[-1]
    return scores.masked_fill(scores < threshold, float("-inf"))


def _top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_scores, order = torch.sort(scores, descending=False)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1.0 - top_p)
    remove[-1] = False  # always keep the most likely token
    return scores.masked_fill(remove.scatter(0, order, remove), float("-inf"))


def _typical_p(scores: torch.Tensor, mass: float) -> torch.Tensor:
    normalized = torch.log_softmax(scores, dim=-1)
    probs = normalized.exp()
    entropy = -(normalized * probs).nansum()
    shifted = (-normalized - entropy).abs()
    sorted_shift, order = torch.sort(shifted)
    cumulative = scores.gather(0, order).softmax(dim=-1).cumsum(dim=-1)
    last = int((cumulative < mass).sum().clamp(max=scores.numel() - 1))
    remove_sorted = sorted_shift > sorted_shift[last]
    return scores.masked_fill(remove_sorted.scatter(0, order, remove_sorted), float("-inf"))
