"""What this process knows about each backend replica: load, latency, circuit, health.

The routing functions read snapshots of this; the relay and the health checker write it. State
is per process on purpose: each web process sees its own traffic and failures, which is what
passive outlier detection needs, and nothing here has to be exact across processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from serving import metrics
from serving.catalog import BackendView
from serving.gateway.routing import (
    Circuit,
    ReplicaSnapshot,
    circuit_after_failure,
    circuit_after_success,
    circuit_view,
    ewma,
)

_CIRCUIT_CODE = {"closed": 0, "half_open": 1, "open": 2}


@dataclass
class ReplicaState:
    outstanding: int = 0
    latency_ms: float = 0.0
    healthy: bool = True
    circuit: Circuit = field(default_factory=Circuit)


class ReplicaBook:
    def __init__(self) -> None:
        self._states: dict[int, ReplicaState] = {}

    def state(self, replica_id: int) -> ReplicaState:
        found = self._states.get(replica_id)
        if found is None:
            found = self._states[replica_id] = ReplicaState()
        return found

    def snapshot(self, backend: BackendView, now: float | None = None) -> list[ReplicaSnapshot]:
        now = time.monotonic() if now is None else now
        out = []
        for replica in backend.replicas:
            state = self.state(replica.id)
            circuit = circuit_view(state.circuit, now)
            half_open = circuit.state == "half_open"
            available = state.healthy and (
                circuit.state == "closed" or (half_open and not state.circuit.probing)
            )
            out.append(
                ReplicaSnapshot(
                    id=replica.id,
                    url=replica.url,
                    weight=replica.weight,
                    outstanding=state.outstanding,
                    latency_ms=state.latency_ms,
                    available=available,
                    half_open=half_open,
                )
            )
        return out

    def begin(self, replica_id: int, *, probe: bool) -> None:
        state = self.state(replica_id)
        state.outstanding += 1
        if probe:
            state.circuit = Circuit(
                state="half_open",
                failures=state.circuit.failures,
                open_until=state.circuit.open_until,
                probing=True,
            )

    def end(self, replica_id: int) -> None:
        state = self.state(replica_id)
        state.outstanding = max(0, state.outstanding - 1)

    def success(self, replica_id: int, backend: BackendView, latency_ms: float) -> None:
        state = self.state(replica_id)
        state.latency_ms = ewma(state.latency_ms, latency_ms)
        if state.circuit.state != "closed" or state.circuit.failures:
            state.circuit = circuit_after_success(state.circuit)
            self._publish(replica_id, backend, state)

    def failure(self, replica_id: int, backend: BackendView) -> None:
        state = self.state(replica_id)
        state.circuit = circuit_after_failure(
            state.circuit,
            time.monotonic(),
            threshold=backend.circuit_failure_threshold,
            cooldown_s=backend.circuit_cooldown_s,
        )
        self._publish(replica_id, backend, state)

    def set_health(self, replica_id: int, backend: BackendView, healthy: bool) -> None:
        state = self.state(replica_id)
        state.healthy = healthy
        self._publish(replica_id, backend, state)

    @staticmethod
    def _publish(replica_id: int, backend: BackendView, state: ReplicaState) -> None:
        labels = {"backend": backend.name, "replica": str(replica_id)}
        metrics.REPLICA_HEALTHY.labels(**labels).set(1 if state.healthy else 0)
        code = _CIRCUIT_CODE[circuit_view(state.circuit, time.monotonic()).state]
        metrics.CIRCUIT_STATE.labels(**labels).set(code)
