"""/metrics sums counters across web processes (prometheus_client multiprocess mode)."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import subprocess_env
from tests.support import spawn_web


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def _healthz_count(metrics: str) -> float:
    pattern = (
        r'django_http_responses_total_by_status_view_method_total\{[^}]*view="healthz"[^}]*\} ([0-9.e+]+)'
    )
    return sum(float(value) for value in re.findall(pattern, metrics))


@pytest.mark.django_db(transaction=True)
def test_metrics_from_two_web_processes_are_summed(tmp_path: Path) -> None:
    env = subprocess_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    first, second = spawn_web(env), spawn_web(env)
    try:
        baseline = _healthz_count(_get(f"{first.url}/metrics"))
        for _ in range(3):
            _get(f"{first.url}/healthz")
        for _ in range(5):
            _get(f"{second.url}/healthz")
        # Either process reports the sum of both, because each writes its own mmap file.
        for web in (first, second):
            assert _healthz_count(_get(f"{web.url}/metrics")) - baseline == 8
    finally:
        first.stop()
        second.stop()
