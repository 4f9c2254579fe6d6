"""A client that leaves a non-streaming request stops the upstream generation, as a WebSocket
cancel does (test_websocket): the engine's own metrics show the request dropped and its batch
emptied, and the ledger records the request as cancelled."""

from __future__ import annotations

import json
import socket
import uuid

import pytest

from serving.models import UsageRecord
from tests.serving.conftest import deploy, engine_metric, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _send_request(port: int, secret: str, body: dict, request_id: str) -> socket.socket:
    payload = json.dumps(body).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        f"Authorization: Bearer {secret}\r\n"
        "Content-Type: application/json\r\n"
        f"X-Request-ID: {request_id}\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head + payload)
    return sock


def test_client_leaving_a_non_streaming_request_stops_the_upstream_generation(
    own_engine, web, celery_worker_process
):
    d = deploy([own_engine.url])
    dropped_before = engine_metric(own_engine, "tgi_request_failure")
    request_id = uuid.uuid4().hex
    body = {"model": "chat", "messages": [{"role": "user", "content": "write a novel"}], "max_tokens": 900}
    sock = _send_request(web.port, d.secret, body, request_id)
    try:
        # The engine is generating this request (900 tokens take seconds): now the client leaves.
        assert wait_for(lambda: engine_metric(own_engine, "tgi_batch_current_size") >= 1, timeout=30)
    finally:
        sock.close()
    assert wait_for(lambda: engine_metric(own_engine, "tgi_request_failure") > dropped_before, timeout=10)
    assert wait_for(lambda: engine_metric(own_engine, "tgi_batch_current_size") == 0, timeout=10)
    record = wait_for(lambda: UsageRecord.objects.filter(request_id=request_id).first())
    assert record is not None, "the cancelled request never reached the ledger"
    assert (record.status, record.http_status, record.finish_reason) == ("cancelled", 499, "cancelled")
    assert (record.tokens_in, record.tokens_out) == (0, 0)  # nothing was delivered: nothing billed
