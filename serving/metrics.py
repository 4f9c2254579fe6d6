"""Prometheus metrics of the gateway, served by Django at /metrics.

Labels are bounded: endpoint and release names come from the database (an unknown name a client
sends is never a label), replicas are ids, status and reason are small fixed sets. With
PROMETHEUS_MULTIPROC_DIR set (make run sets it), every web process writes its own files and
/metrics sums them; gauges say how (live sum for in-flight, worst case for health and circuits).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)

REQUESTS = Counter(
    "switchboard_gateway_requests",
    "Gateway requests by endpoint, release and outcome",
    ["endpoint", "release", "status"],
)
TTFT = Histogram(
    "switchboard_gateway_ttft_seconds",
    "Time to first token, as the client sees it",
    ["endpoint"],
    buckets=_LATENCY_BUCKETS,
)
LATENCY = Histogram(
    "switchboard_gateway_latency_seconds", "Whole request time", ["endpoint"], buckets=_LATENCY_BUCKETS
)
OVERHEAD = Histogram(
    "switchboard_gateway_overhead_seconds",
    "Time the gateway itself added (auth, admission, routing, relay)",
    buckets=_OVERHEAD_BUCKETS,
)
TOKENS = Counter("switchboard_gateway_tokens", "Tokens by endpoint and direction", ["endpoint", "direction"])
COST = Counter("switchboard_gateway_cost_usd", "Settled cost in USD", ["endpoint"])
IN_FLIGHT = Gauge(
    "switchboard_gateway_in_flight", "Requests being served", ["endpoint"], multiprocess_mode="livesum"
)
REJECTIONS = Counter("switchboard_gateway_rejections", "Requests refused, by reason", ["reason"])
REPLICA_HEALTHY = Gauge(
    "switchboard_backend_replica_healthy",
    "1 if the replica passes health checks (worst across processes)",
    ["backend", "replica"],
    multiprocess_mode="livemin",
)
CIRCUIT_STATE = Gauge(
    "switchboard_backend_circuit_state",
    "0 closed, 1 half-open, 2 open (worst across processes)",
    ["backend", "replica"],
    multiprocess_mode="livemax",
)
USAGE_BUFFERED = Gauge(
    "switchboard_usage_buffered", "Usage records waiting in process for Redis", multiprocess_mode="livesum"
)
USAGE_WRITTEN = Counter("switchboard_usage_records_written", "Usage records inserted by the drain task")
