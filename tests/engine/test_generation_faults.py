"""Generation failures over HTTP, with a fault injected into the model's forward pass.

The engine app runs in this process under a real uvicorn server on a free port; the only fake is
the model wrapper that raises while `failing` is set (fault injection, as the names say).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import torch
import uvicorn
from huggingface_hub import InferenceClient
from huggingface_hub.errors import GenerationError

from serving.engine.app import create_app
from serving.engine.config import build_parser, resolve_config
from serving.engine.launcher import free_port
from serving.engine.model import load_model
from serving.engine.service import EngineService


class FaultyModel:
    """The real model, except that every forward pass raises while `failing` is set."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.device = model.device
        self.failing = False

    def __call__(self, **kwargs: Any) -> Any:
        if self.failing:
            raise RuntimeError("injected fault")
        return self.model(**kwargs)


@pytest.fixture(scope="module")
def faulty_engine() -> Iterator[tuple[str, FaultyModel]]:
    torch.set_num_threads(1)
    loaded = load_model("default")
    faulty = FaultyModel(loaded.model)
    port = free_port()
    config = resolve_config(build_parser().parse_args(["--port", str(port)]), loaded.max_position_embeddings)
    app = create_app(EngineService(dataclasses.replace(loaded, model=faulty), config))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(300):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", faulty
    server.should_exit = True
    thread.join(timeout=10)


def test_generation_failure_fault_injected_is_424(faulty_engine: tuple[str, FaultyModel]) -> None:
    url, faulty = faulty_engine
    faulty.failing = True
    try:
        response = requests.post(
            url + "/generate", json={"inputs": "Hello", "parameters": {"max_new_tokens": 3}}, timeout=60
        )
        assert response.status_code == 424
        assert response.json() == {
            "error": "Request failed during generation: injected fault",
            "error_type": "generation",
        }
        with pytest.raises(GenerationError, match="injected fault"):
            InferenceClient(base_url=url).text_generation("Hello", max_new_tokens=3)
    finally:
        faulty.failing = False


def test_generation_failure_fault_injected_in_streams(faulty_engine: tuple[str, FaultyModel]) -> None:
    url, faulty = faulty_engine
    faulty.failing = True
    try:
        stream = requests.post(
            url + "/generate_stream", json={"inputs": "Hello", "parameters": {}}, timeout=60
        )
        assert stream.status_code == 200
        error = b'{"error":"Request failed during generation: injected fault","error_type":"generation"}'
        assert stream.content == b"data: " + error + b"\n\n"
        chat = requests.post(
            url + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True},
            timeout=60,
        )
        events = [e.removeprefix("data: ") for e in chat.text.split("\n\n") if e]
        assert json.loads(events[0]) == {
            "error": {"message": "Request failed during generation: injected fault", "http_status_code": 422}
        }
        assert events[-1] == "[DONE]"
    finally:
        faulty.failing = False


def test_health_probes_the_model_after_a_fault_injected_failure(
    faulty_engine: tuple[str, FaultyModel],
) -> None:
    url, faulty = faulty_engine
    faulty.failing = True
    try:
        requests.post(
            url + "/generate", json={"inputs": "Hello", "parameters": {"max_new_tokens": 3}}, timeout=60
        )
        unhealthy = requests.get(url + "/health", timeout=60)
        assert unhealthy.status_code == 503
        assert unhealthy.json() == {"error": "unhealthy", "error_type": "healthcheck"}
    finally:
        faulty.failing = False
    assert requests.get(url + "/health", timeout=60).status_code == 200  # the probe generation now succeeds
    ok = requests.post(
        url + "/generate", json={"inputs": "Hello", "parameters": {"max_new_tokens": 3}}, timeout=60
    )
    assert ok.status_code == 200
