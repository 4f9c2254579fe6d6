"""Routing decisions are pure functions: tested here without any I/O."""

from __future__ import annotations

from collections import Counter

from serving.gateway.routing import (
    Circuit,
    ReplicaSnapshot,
    affinity_key,
    choose_replica,
    circuit_after_failure,
    circuit_after_success,
    circuit_view,
    pick_weighted,
    sticky_bucket,
)


def _replicas(*outstanding: int, latency: float = 10.0, available: bool = True) -> list[ReplicaSnapshot]:
    return [
        ReplicaSnapshot(
            id=i + 1, url=f"http://r{i + 1}", weight=1, outstanding=o, latency_ms=latency, available=available
        )
        for i, o in enumerate(outstanding)
    ]


def test_least_loaded_prefers_fewer_outstanding_requests():
    decision = choose_replica(_replicas(3, 0, 2), affinity=None)
    assert decision is not None and (decision.replica_id, decision.reason) == (2, "least_loaded")


def test_latency_average_weighs_the_choice():
    slow = ReplicaSnapshot(id=1, url="a", weight=1, outstanding=0, latency_ms=500, available=True)
    fast = ReplicaSnapshot(id=2, url="b", weight=1, outstanding=1, latency_ms=20, available=True)
    assert choose_replica([slow, fast], affinity=None).replica_id == 2


def test_unavailable_and_excluded_replicas_are_skipped():
    replicas = _replicas(0, 5, 9)
    replicas[0] = ReplicaSnapshot(id=1, url="a", weight=1, outstanding=0, latency_ms=1, available=False)
    assert choose_replica(replicas, affinity=None, exclude=frozenset({2})).replica_id == 3
    assert choose_replica(_replicas(0, available=False), affinity=None) is None


def test_same_prefix_goes_to_the_same_replica():
    replicas = _replicas(0, 0, 0, 0)
    key = affinity_key("You are a helpful assistant for the billing team. " * 3)
    picks = {choose_replica(replicas, affinity=key).replica_id for _ in range(10)}
    assert len(picks) == 1
    spread = Counter(
        choose_replica(
            replicas, affinity=affinity_key(f"system prompt number {i:04d} for a conversation")
        ).replica_id
        for i in range(400)
    )
    assert len(spread) == 4 and min(spread.values()) > 40  # different prefixes spread over all


def test_bounded_load_moves_a_hot_prefix_off_an_overloaded_replica():
    key = affinity_key("the same long shared prefix for every request in this test")
    home = choose_replica(_replicas(0, 0, 0), affinity=key).replica_id
    loads = [0, 0, 0]
    loads[home - 1] = 10  # the home replica carries far more than 1.25x the average
    decision = choose_replica(_replicas(*loads), affinity=key)
    assert decision.replica_id != home and decision.reason == "affinity"


def test_circuit_opens_after_threshold_half_opens_after_cooldown_and_closes_on_success():
    circuit = Circuit()
    for _ in range(2):
        circuit = circuit_after_failure(circuit, 100.0, threshold=3, cooldown_s=30)
    assert circuit.state == "closed"
    circuit = circuit_after_failure(circuit, 100.0, threshold=3, cooldown_s=30)
    assert circuit.state == "open" and circuit_view(circuit, 120.0).state == "open"
    assert circuit_view(circuit, 131.0).state == "half_open"
    reopened = circuit_after_failure(circuit, 131.0, threshold=3, cooldown_s=30)
    assert reopened.state == "open" and reopened.open_until == 161.0
    assert circuit_after_success(circuit).state == "closed"


def test_half_open_replica_gets_exactly_the_probe():
    replicas = _replicas(0, 0)
    replicas[1] = ReplicaSnapshot(
        id=2, url="b", weight=1, outstanding=0, latency_ms=1, available=True, half_open=True
    )
    assert choose_replica(replicas, affinity=None).reason == "half_open_probe"


def test_sticky_buckets_are_stable_and_weights_split_traffic():
    assert sticky_bucket(7, "alice") == sticky_bucket(7, "alice")
    arms = Counter(pick_weighted([90, 10], sticky_bucket(7, f"user-{i}")) for i in range(2000))
    assert 1700 < arms[0] < 1900
    assert pick_weighted([100], 99) == 0 and pick_weighted([0, 100], 0) == 1
