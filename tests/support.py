"""Helpers for tests that run the product's real processes (web replicas) as subprocesses."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WebProcess:
    """One uvicorn process serving controlplane.asgi:application, as `make run` starts it."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def spawn_web(env: Mapping[str, str], *, ready_path: str = "/healthz", timeout: float = 60.0) -> WebProcess:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "controlplane.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
        ],
        cwd=REPO_ROOT,
        env=dict(env),
    )
    web = WebProcess(proc=proc, port=port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"web process exited with {proc.returncode} during start")
        try:
            with urllib.request.urlopen(f"{web.url}{ready_path}", timeout=2) as response:
                if response.status == 200:
                    return web
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    web.stop()
    raise RuntimeError(f"web process not ready within {timeout}s")
