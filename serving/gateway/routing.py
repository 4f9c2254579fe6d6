"""Choosing a replica: pure functions over snapshots, plus the per-process book they read.

- Availability: a replica is out while active health checks fail, or while its circuit is open
  (too many consecutive failures seen on real requests: passive outlier detection). After the
  cooldown the circuit is half-open and lets exactly one probe request through.
- Prefix affinity: requests whose conversation prefix hashes alike go to the same replica, so its
  KV/prefix cache is reused. Consistent hashing with bounded load: a replica is skipped while it
  carries more than `load_factor` times the average, so a hot prefix cannot swamp one replica.
- Otherwise least outstanding requests, weighted by the replica's latency average.

`choose_replica` and the circuit transitions do no I/O, so they are tested and benchmarked alone.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from serving.types import RouteDecision

CircuitState = Literal["closed", "open", "half_open"]
VIRTUAL_NODES = 64
LOAD_FACTOR = 1.25
EWMA_ALPHA = 0.2


@dataclass(frozen=True, slots=True)
class ReplicaSnapshot:
    id: int
    url: str
    weight: int
    outstanding: int
    latency_ms: float  # 0 when unknown
    available: bool
    half_open: bool = False


def stable_hash(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")


@lru_cache(maxsize=256)
def hash_ring(replica_ids: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sorted ring points and the replica owning each; cached per replica set."""
    points = sorted(
        (stable_hash(f"replica:{rid}:{i}"), rid) for rid in replica_ids for i in range(VIRTUAL_NODES)
    )
    return tuple(p for p, _ in points), tuple(r for _, r in points)


def _score(replica: ReplicaSnapshot) -> float:
    return (replica.outstanding + 1) * max(replica.latency_ms, 1.0) / replica.weight


def least_loaded(candidates: Sequence[ReplicaSnapshot]) -> ReplicaSnapshot:
    return min(candidates, key=lambda r: (_score(r), r.outstanding, r.id))


def affinity_pick(
    candidates: Sequence[ReplicaSnapshot], affinity: int, load_factor: float = LOAD_FACTOR
) -> ReplicaSnapshot | None:
    """First replica clockwise from the prefix's hash whose load is within the bound."""
    by_id = {r.id: r for r in candidates}
    points, owners = hash_ring(tuple(sorted(by_id)))
    total = sum(r.outstanding for r in candidates)
    capacity = math.ceil(load_factor * (total + 1) / len(candidates))
    start = bisect.bisect(points, affinity)
    seen: set[int] = set()
    for step in range(len(points)):
        rid = owners[(start + step) % len(points)]
        if rid in seen:
            continue
        seen.add(rid)
        if by_id[rid].outstanding < capacity:
            return by_id[rid]
    return None


def choose_replica(
    replicas: Sequence[ReplicaSnapshot], *, affinity: int | None, exclude: frozenset[int] = frozenset()
) -> RouteDecision | None:
    """The replica for the next attempt, or None when none is available."""
    candidates = [r for r in replicas if r.available and r.id not in exclude]
    if not candidates:
        return None
    probe = next((r for r in candidates if r.half_open), None)
    if probe is not None:
        return RouteDecision(replica_id=probe.id, url=probe.url, reason="half_open_probe")
    if affinity is not None and len(candidates) > 1:
        chosen = affinity_pick(candidates, affinity)
        if chosen is not None:
            return RouteDecision(replica_id=chosen.id, url=chosen.url, reason="affinity")
    chosen = least_loaded(candidates)
    return RouteDecision(replica_id=chosen.id, url=chosen.url, reason="least_loaded")


@dataclass(frozen=True, slots=True)
class Circuit:
    state: CircuitState = "closed"
    failures: int = 0
    open_until: float = 0.0
    probing: bool = False


def circuit_view(circuit: Circuit, now: float) -> Circuit:
    """An open circuit whose cooldown has passed reads as half-open."""
    if circuit.state == "open" and now >= circuit.open_until:
        return Circuit(state="half_open", failures=circuit.failures, open_until=circuit.open_until)
    return circuit


def circuit_after_failure(circuit: Circuit, now: float, *, threshold: int, cooldown_s: float) -> Circuit:
    current = circuit_view(circuit, now)
    failures = current.failures + 1
    if current.state == "half_open" or failures >= threshold:
        return Circuit(state="open", failures=failures, open_until=now + cooldown_s)
    return Circuit(state=current.state, failures=failures, open_until=current.open_until)


def circuit_after_success(circuit: Circuit) -> Circuit:
    return Circuit()


def ewma(previous_ms: float, sample_ms: float) -> float:
    return sample_ms if previous_ms <= 0 else previous_ms + EWMA_ALPHA * (sample_ms - previous_ms)


def affinity_key(prefix: str) -> int | None:
    """The hash of a conversation prefix; None when there is nothing worth keeping warm."""
    return stable_hash(prefix) if len(prefix) >= 32 else None


def sticky_bucket(endpoint_id: int, subject: str) -> int:
    """0..99, the same for a subject on an endpoint every time, in every process."""
    return stable_hash(f"{endpoint_id}:{subject}") % 100


def pick_weighted(weights: Sequence[int], bucket: int) -> int:
    """Index of the entry whose cumulative share covers `bucket` (weights sum to 100)."""
    total = sum(weights)
    if total <= 0:
        raise ValueError("no traffic weight")
    point = bucket * total // 100
    running = 0
    for index, weight in enumerate(weights):
        running += weight
        if point < running:
            return index
    return len(weights) - 1
