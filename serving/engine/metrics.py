"""Prometheus metrics under TGI's names, rendered the way TGI's exporter renders them.

prometheus_client appends `_total` to every counter, but TGI's counters (`tgi_request_count`,
`tgi_request_success`, ...) have no suffix and dashboards query those exact names, so this is a
small registry of its own. Values are updated from the scheduler thread and from the event loop,
hence a lock per metric.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable

LabelKey = tuple[tuple[str, str], ...]


def _labels(labels: dict[str, str]) -> LabelKey:
    return tuple(sorted(labels.items()))


def _render_labels(key: LabelKey, extra: tuple[str, str] | None = None) -> str:
    items = [*key, extra] if extra else list(key)
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in items) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self._values: dict[LabelKey, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = _labels(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(_labels(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_render_labels(k)} {_number(v)}" for k, v in items]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[_labels(labels)] = float(value)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Iterable[float]) -> None:
        super().__init__(name, help_text)
        self.buckets = tuple(buckets)
        self._series: dict[LabelKey, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = _labels(labels)
        with self._lock:
            counts, total = self._series.setdefault(key, ([0] * (len(self.buckets) + 1), [0.0]))
            # Non-cumulative counts (one bisect per observation); render() accumulates them.
            counts[bisect.bisect_left(self.buckets, value)] += 1
            total[0] += value

    def count(self, **labels: str) -> int:
        with self._lock:
            series = self._series.get(_labels(labels))
            return sum(series[0]) if series else 0

    def render(self) -> list[str]:
        lines: list[str] = []
        with self._lock:
            items = sorted((k, (list(c), t[0])) for k, (c, t) in self._series.items())
        for key, (counts, total) in items:
            cumulative = 0
            for bound, count in zip(self.buckets, counts, strict=False):
                cumulative += count
                lines.append(f"{self.name}_bucket{_render_labels(key, ('le', _number(bound)))} {cumulative}")
            cumulative += counts[-1]
            lines.append(f"{self.name}_bucket{_render_labels(key, ('le', '+Inf'))} {cumulative}")
            lines.append(f"{self.name}_sum{_render_labels(key)} {_number(total)}")
            lines.append(f"{self.name}_count{_render_labels(key)} {cumulative}")
        return lines


def duration_buckets() -> tuple[float, ...]:
    """TGI's 35 geometric buckets: 0.00015 s growing by 1.5."""
    return tuple(0.00015 * 1.5**i for i in range(35))


def linear_buckets(maximum: int, steps: int = 100) -> tuple[float, ...]:
    step = max(maximum / steps, 1.0)
    return tuple(step * (i + 1) for i in range(steps))


class EngineMetrics:
    """The series TGI's router exports that this engine has a meaning for."""

    def __init__(self, *, max_input_tokens: int, max_total_tokens: int) -> None:
        d = duration_buckets()
        self.request_count = Counter("tgi_request_count", "Total number of requests")
        self.request_success = Counter("tgi_request_success", "Number of successful requests")
        self.request_failure = Counter("tgi_request_failure", "Number of failed requests")
        self.request_duration = Histogram("tgi_request_duration", "Request duration (s)", d)
        self.validation_duration = Histogram("tgi_request_validation_duration", "Validation time (s)", d)
        self.queue_duration = Histogram("tgi_request_queue_duration", "Time spent in the queue (s)", d)
        self.inference_duration = Histogram("tgi_request_inference_duration", "Inference time (s)", d)
        self.time_per_token = Histogram(
            "tgi_request_mean_time_per_token_duration", "Mean time per generated token (s)", d
        )
        self.generated_tokens = Histogram(
            "tgi_request_generated_tokens", "Generated tokens per request", linear_buckets(max_total_tokens)
        )
        self.input_length = Histogram(
            "tgi_request_input_length", "Input tokens per request", linear_buckets(max_input_tokens)
        )
        self.max_new_tokens = Histogram(
            "tgi_request_max_new_tokens", "Requested max_new_tokens", linear_buckets(max_total_tokens)
        )
        self.queue_size = Gauge("tgi_queue_size", "Requests waiting in the queue")
        self.batch_current_size = Gauge("tgi_batch_current_size", "Requests in the running batch")
        self.batch_current_max_tokens = Gauge(
            "tgi_batch_current_max_tokens", "Worst-case tokens the running batch can grow to"
        )
        self.batch_max_total_tokens = Gauge("tgi_batch_max_total_tokens", "Token budget of a batch")
        self.batch_next_size = Histogram(
            "tgi_batch_next_size", "Size of each new batch", tuple(float(i) for i in range(1, 1025))
        )
        self.batch_inference_count = Counter("tgi_batch_inference_count", "Forward passes")
        self.batch_inference_success = Counter("tgi_batch_inference_success", "Successful forward passes")
        self.batch_inference_failure = Counter("tgi_batch_inference_failure", "Failed forward passes")
        self.batch_inference_duration = Histogram(
            "tgi_batch_inference_duration", "Forward pass plus token choice (s)", d
        )
        self.batch_forward_duration = Histogram("tgi_batch_forward_duration", "Model forward pass (s)", d)
        self.batch_decode_duration = Histogram(
            "tgi_batch_decode_duration", "Token choice and detokenising (s)", d
        )
        self.batch_filter_duration = Histogram("tgi_batch_filter_duration", "Dropping finished rows (s)", d)
        self.batch_concat = Counter("tgi_batch_concat", "Times new requests joined the running batch")
        self.batch_concat_duration = Histogram("tgi_batch_concat_duration", "Merging KV caches (s)", d)

    def all(self) -> list[_Metric]:
        return [m for m in vars(self).values() if isinstance(m, _Metric)]

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.all():
            lines.extend(metric.header())
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
