"""Prometheus metrics of the gateway, served by Django at /metrics.

Labels are bounded: endpoint and release names come from the database (an unknown name a client
sends is never a label), replicas are ids, status and reason are small fixed sets. With
PROMETHEUS_MULTIPROC_DIR set (make run sets it), every web process writes its own files and
/metrics sums them; gauges say how (live sum for in-flight, worst case for health and circuits).

The request path uses `series(endpoint)`: the endpoint's labelled children bound once, because
`labels()` takes a lock and builds a label key on every call.
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
    "Time to first token of streamed responses, as the client sees it",
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
OVER_RESERVATION = Counter(
    "switchboard_gateway_over_reservation",
    "Requests whose backend reported more tokens than admission reserved (charged as reported)",
    ["endpoint"],
)
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


class EndpointSeries:
    """One endpoint's labelled children."""

    __slots__ = (
        "_requests",
        "cost",
        "in_flight",
        "latency",
        "name",
        "over_reservation",
        "tokens_in",
        "tokens_out",
        "ttft",
    )

    def __init__(self, endpoint: str) -> None:
        self.name = endpoint
        self.in_flight = IN_FLIGHT.labels(endpoint)
        self.latency = LATENCY.labels(endpoint)
        self.ttft = TTFT.labels(endpoint)
        self.tokens_in = TOKENS.labels(endpoint, "in")
        self.tokens_out = TOKENS.labels(endpoint, "out")
        self.cost = COST.labels(endpoint)
        self.over_reservation = OVER_RESERVATION.labels(endpoint)
        self._requests: dict[tuple[str, str], Counter] = {}

    def requests(self, release: str, status: str) -> Counter:
        child = self._requests.get((release, status))
        if child is None:
            child = self._requests[(release, status)] = REQUESTS.labels(self.name, release, status)
        return child


_series: dict[str, EndpointSeries] = {}
_rejections: dict[str, Counter] = {}


def series(endpoint: str) -> EndpointSeries:
    found = _series.get(endpoint)
    if found is None:
        found = _series[endpoint] = EndpointSeries(endpoint)
    return found


def rejected(code: str) -> None:
    child = _rejections.get(code)
    if child is None:
        child = _rejections[code] = REJECTIONS.labels(code)
    child.inc()
