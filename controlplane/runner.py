"""`make run`: the embedded stack plus web, worker, beat and engine under honcho.

honcho supervises the processes (start, interleaved prefixed output, Ctrl-C stops them all);
this module only prepares the environment, runs migrations, and says where to open the console.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from honcho.manager import Manager

from controlplane.stack import REPO_ROOT, EmbeddedStack

PY = shlex.quote(sys.executable)


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free TCP port on 127.0.0.1")


def _prepare(env: dict[str, str]) -> None:
    for args in (["migrate", "--noinput"], ["ensure_admin"], ["register_engine"]):
        subprocess.run([sys.executable, "manage.py", *args], env=env, cwd=REPO_ROOT, check=True)


def _processes(web_port: int, engine_port: int, data: str) -> dict[str, str]:
    return {
        "web": (
            f"{PY} -m uvicorn controlplane.asgi:application --host 127.0.0.1 --port {web_port} "
            "--loop uvloop --http httptools --no-access-log --timeout-graceful-shutdown 5"
        ),
        "worker": f"{PY} -m celery -A controlplane worker --loglevel WARNING --concurrency 2 -n worker@%h",
        "beat": (
            f"{PY} -m celery -A controlplane beat --loglevel WARNING "
            f"-s {shlex.quote(data)}/celerybeat-schedule"
        ),
        "engine": (
            f"{PY} -m serving.engine --model default --host 127.0.0.1 --port {engine_port} "
            "--embedding-model default"
        ),
    }


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _announce_when_ready(web_port: int, engine_port: int, stop: threading.Event) -> None:
    """Prints the console address once the web process is ready and the engine has its model loaded."""
    url = f"http://127.0.0.1:{web_port}"
    probes = [f"{url}/readyz", f"http://127.0.0.1:{engine_port}/health"]
    started = time.monotonic()
    while not stop.wait(0.5):
        if all(_answers(probe) for probe in probes):
            break
    else:
        return
    took = time.monotonic() - started
    banner = (
        f"\n  Switchboard is ready ({took:.1f}s): open {url}/admin/\n"
        f"  API docs: {url}/api/docs/   health: {url}/readyz   metrics: {url}/metrics\n"
        "  Press Ctrl-C to stop everything.\n"
    )
    sys.stdout.write(banner)
    sys.stdout.flush()


def run_product(stack: EmbeddedStack) -> int:
    addresses = stack.start()
    try:
        web_port = int(os.environ.get("SWITCHBOARD_PORT", "8000"))
        engine_port = _free_port(int(os.environ.get("SWITCHBOARD_ENGINE_PORT", "8081")))
        metrics_dir = stack.root / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)  # stale files from dead pids would skew sums
        metrics_dir.mkdir(parents=True)
        env = {
            **os.environ,
            **addresses,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "SWITCHBOARD_ENGINE_URL": f"http://127.0.0.1:{engine_port}",
            "PYTHONUNBUFFERED": "1",
        }
        _prepare(env)
        manager = Manager()
        for name, command in _processes(web_port, engine_port, str(stack.root)).items():
            manager.add_process(name, command, env=env, cwd=str(REPO_ROOT))
        stop = threading.Event()
        threading.Thread(target=_announce_when_ready, args=(web_port, engine_port, stop), daemon=True).start()
        manager.loop()
        stop.set()
        return int(manager.returncode or 0)
    finally:
        stack.stop()
