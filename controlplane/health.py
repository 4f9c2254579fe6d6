"""Liveness and readiness probes.

/healthz answers as long as the process serves requests. /readyz checks each dependency with a
short timeout and names what is down, so an orchestrator (and an operator) sees why at a glance.
"""

from __future__ import annotations

from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from kombu import Connection

PROBE_TIMEOUT_S = 2.0


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_redis() -> None:
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=PROBE_TIMEOUT_S, socket_connect_timeout=PROBE_TIMEOUT_S
    )
    try:
        client.ping()
    finally:
        client.close()


def _check_celery_broker() -> None:
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=PROBE_TIMEOUT_S) as conn:
        conn.ensure_connection(max_retries=1, timeout=PROBE_TIMEOUT_S)


CHECKS: dict[str, Callable[[], None]] = {
    "database": _check_database,
    "redis": _check_redis,
    "celery_broker": _check_celery_broker,
}


def run_checks() -> dict[str, str]:
    results: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # any failure means "not ready"; the class name says which kind
            results[name] = f"down: {type(exc).__name__}"
    return results


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "alive"})


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    results = run_checks()
    down = sorted(name for name, state in results.items() if state != "ok")
    status = 503 if down else 200
    body = {"status": "ready" if not down else "unavailable", "checks": results, "down": down}
    response = JsonResponse(body, status=status)
    if down:
        response["Retry-After"] = "5"
    return response
