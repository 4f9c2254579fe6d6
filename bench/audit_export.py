"""Audit log at scale: bulk-write N events, export them as JSONL in a separate process, verify them.

    .venv/bin/python -m controlplane.stack exec -- .venv/bin/python bench/audit_export.py [--events N]

Runs in its own database (`switchboard_bench`, dropped and re-created, migrated) on the server
DATABASE_URL names, so it never touches operator data. Prints: events/s written (audit_record_many,
one transaction per batch), export rows/s and the peak RSS of the exporting process (the same code
path as `manage.py audit_export`: a server-side cursor feeding a block-buffered stream; goal under
200 MB whatever N), and how long audit_verify takes over the chain and its hourly digests.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "switchboard_bench"
ACTIONS = [
    "prompt_version.create",
    "prompt_label.move",
    "api_key.create",
    "api_key.revoke",
    "endpoint.set_traffic",
    "backend.update",
    "release.create",
    "budget.update",
]


def _bench_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{BENCH_DB}"))


def _recreate_database(admin_url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")


def _django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["DEBUG"] = "0"  # with DEBUG on, Django keeps every query's SQL: gigabytes of INSERTs here
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()


def _entries(start: int, count: int, first_time: datetime, step: timedelta) -> list:
    from controlplane.services.audit import Actor, AuditEntry

    entries = []
    for i in range(start, start + count):
        actor = Actor(
            type="user" if i % 3 else "api_key",
            id=str(i % 97),
            label=f"user-{i % 97}",
            request_id=f"req-{i:012d}",
            ip=f"10.{i % 250}.{(i // 250) % 250}.{i % 7 + 1}",
        )
        entries.append(
            AuditEntry(
                actor=actor,
                action=ACTIONS[i % len(ACTIONS)],
                team_id=i % 13 + 1,
                target_type="prompts.promptlabel",
                target_id=str(i % 5000),
                target_label=f"prompt-{i % 5000}@production",
                before={"version": i % 40, "weight": 50},
                after={"version": i % 40 + 1, "weight": 50, "secret": "x"},
                occurred_at=first_time + step * i,
            )
        )
    return entries


def write_events(total: int, batch: int) -> float:
    from controlplane.services.audit import audit_record_many

    # Spread over the last three hours so hourly digests close real periods and verify checks them.
    first_time = datetime.now(UTC) - timedelta(hours=3)
    step = timedelta(hours=3) / max(total, 1)
    started = time.perf_counter()
    for start in range(0, total, batch):
        audit_record_many(_entries(start, min(batch, total - start), first_time, step))
        done = min(start + batch, total)
        if done % (batch * 20) == 0 or done == total:
            print(
                f"  written {done:>9,} events ({done / (time.perf_counter() - started):,.0f}/s)", flush=True
            )
    return time.perf_counter() - started


def _run_child(args: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """Runs this script in a child; returns (seconds, peak RSS sampled by psutil, exit status)."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, *args], env=env, cwd=REPO_ROOT)
    watched = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    return time.perf_counter() - started, peak, child.returncode


def child_export(output: str) -> None:
    from django.core.management import call_command

    call_command("audit_export", format="jsonl", output=output)


def child_verify() -> None:
    from controlplane.audit.verify import audit_verify

    report = audit_verify()
    print(f"  verify: {report.events_checked:,} events, {report.digests_checked} digests, ok={report.ok}")
    raise SystemExit(0 if report.ok else 1)


def _count_lines(path: Path) -> int:
    lines = 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            lines += block.count(b"\n")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000, help="events per audit_record_many call")
    parser.add_argument("--keep", action="store_true", help="keep the bench database afterwards")
    parser.add_argument("--child", choices=["export", "verify"], help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _django(os.environ["DATABASE_URL"])
        child_export(args.output) if args.child == "export" else child_verify()
        return 0

    admin_url = os.environ.get("DATABASE_URL")
    if not admin_url:
        print("DATABASE_URL is not set: run under `python -m controlplane.stack exec --`", file=sys.stderr)
        return 2
    url = _bench_url(admin_url)
    _recreate_database(admin_url)
    _django(url)
    from django.core.management import call_command

    from controlplane.audit.digest import audit_digests_close

    call_command("migrate", verbosity=0)
    print(f"audit bench: {args.events:,} events in database {BENCH_DB!r}, batches of {args.batch:,}")
    write_s = write_events(args.events, args.batch)
    digests = audit_digests_close()
    print(f"  closed {len(digests)} hourly digests")

    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "0"}
    with tempfile.TemporaryDirectory(prefix="sb-audit-bench-") as folder:
        output = Path(folder) / "audit.jsonl"
        export_s, export_peak, status = _run_child(["--child", "export", "--output", str(output)], env)
        # ru_maxrss of waited-for children, in KiB on Linux; the export child is the only one so far.
        export_maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        rows = _count_lines(output) if status == 0 else 0
        size = output.stat().st_size if output.exists() else 0
    verify_s, verify_peak, verify_status = _run_child(["--child", "verify"], env)

    print("\nresults")
    print(f"  write   {args.events / write_s:>12,.0f} events/s   ({write_s:.1f} s)")
    print(
        f"  export  {rows / export_s:>12,.0f} rows/s     ({export_s:.1f} s, {rows:,} rows, "
        f"{size / 1e6:,.0f} MB JSONL, exit {status})"
    )
    print(
        f"  export peak RSS {max(export_peak, export_maxrss) / 2**20:>8,.1f} MiB "
        f"(getrusage {export_maxrss / 2**20:.1f}, sampled {export_peak / 2**20:.1f}; goal < 200 MB)"
    )
    print(
        f"  verify  {verify_s:>12.1f} s          "
        f"(exit {verify_status}, peak RSS {verify_peak / 2**20:.1f} MiB)"
    )
    if not args.keep:
        from django.db import connections

        connections.close_all()
        _recreate_database_drop(admin_url)
    return 0 if status == 0 and verify_status == 0 and rows >= args.events else 1


def _recreate_database_drop(admin_url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


if __name__ == "__main__":
    raise SystemExit(main())
