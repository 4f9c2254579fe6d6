"""Start an engine as a real subprocess and wait until it serves: for tests, benches and tools.

    with spawn_engine("default", extra_args=["--max-concurrent-requests", "8"]) as engine:
        requests.get(engine.url + "/info")

The engine's output goes to a log file (a pipe nobody reads would eventually block it), and a
failed start raises with the end of that log, so a broken engine explains itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class EngineStartError(RuntimeError):
    """The engine exited, or did not answer /health in time."""


@dataclass
class EngineProcess:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL if it hangs."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)

    def __enter__(self) -> EngineProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def spawn_engine(
    model: str = "default",
    port: int | None = None,
    extra_args: Sequence[str] = (),
    *,
    host: str = "127.0.0.1",
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 180.0,
    log_path: Path | None = None,
) -> EngineProcess:
    """Start `python -m serving.engine` and return once GET /health answers 200."""
    port = port if port is not None else free_port(host)
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix=f"engine-{port}-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    command = [sys.executable, "-m", "serving.engine", "--model", model, "--host", host, "--port", str(port)]
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH")]))
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, *extra_args], cwd=REPO_ROOT, env=child_env, stdout=log, stderr=subprocess.STDOUT
        )
    engine = EngineProcess(process, host, port, log_path)
    try:
        wait_ready(engine, ready_timeout)
    except BaseException:
        engine.stop()
        raise
    return engine


def wait_ready(engine: EngineProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not engine.running():
            raise EngineStartError(f"engine exited with {engine.process.returncode}:\n{engine.log_tail()}")
        if _healthy(engine.url):
            return
        time.sleep(0.1)
    raise EngineStartError(f"engine did not become healthy within {timeout:.0f}s:\n{engine.log_tail()}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:  # a local http URL we built
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False
