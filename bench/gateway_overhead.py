"""What the gateway adds to a request, against the same upstream reached directly, through a bare
relay, and through LiteLLM Proxy.

    .venv/bin/python bench/gateway_overhead.py [--duration 5] [--repeat 1] [--skip-litellm]

One run starts everything itself and cleans up:
- a minimal TGI-protocol responder (bench-only: answers /v1/chat/completions after a fixed
  latency, JSON or an SSE stream of a few tokens), so only overhead is measured;
- its own embedded stack (controlplane.stack: PostgreSQL + Valkey) with a separate database,
  migrated, and the objects the gateway needs created through the services (a key with rate
  limits and a budget, so admission does its full work);
- Switchboard (uvicorn, one process, controlplane.asgi:application, the whole path: auth,
  admission, resolve, routing, relay, metrics, usage);
- a bare relay (raw ASGI + pooled aiohttp, no auth/admission/accounting): the floor a gateway in
  Python can reach, to show what the full path costs on top;
- LiteLLM Proxy from its own virtual environment (bench/.litellm-venv, installed on first use),
  `openai/` provider pointed at the responder's /v1, LITELLM_LOCAL_MODEL_COST_MAP=True.
Load comes from `wrk` (C; installed with apt-get if missing) so the client does not eat the CPU
it measures; TTFT is measured with a small sequential client at concurrency 1.

With --repeat N every target is measured N times, round after round (so slow drift of a shared
machine hits every target alike), and each figure is the median over the rounds. The report ends
with the gateway's goals beside the measured figures.
"""

# ruff: noqa: E501  (the responder, relay and wrk programs embedded below keep their lines whole)

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: make the project importable
PY = sys.executable
LITELLM_VENV = REPO / "bench" / ".litellm-venv"
LITELLM_VERSION = "1.108.7"
LATENCY_MS = 2.0
STREAM_TOKENS = 8
CONCURRENCY = (1, 16, 64)
# The gateway's goals on these machines (issue 5): added latency over the direct path, and
# throughput against LiteLLM Proxy.
GOAL_P50_C1_MS = 1.0
GOAL_P99_C64_MS = 10.0
GOAL_LITELLM_RATIO = 3.0
BODY = {
    "model": "bench",
    "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
    "max_tokens": 16,
}

RESPONDER = textwrap.dedent(
    f"""
    import asyncio, json, time
    LATENCY = {LATENCY_MS} / 1000
    TOKENS = {STREAM_TOKENS}

    def _chunk(text, finish=None):
        return ("data: " + json.dumps({{"object": "chat.completion.chunk", "id": "", "created": 0, "model": "bench",
            "choices": [{{"index": 0, "delta": {{"role": "assistant", "content": text}}, "logprobs": None,
            "finish_reason": finish}}]}}) + "\\n\\n").encode()

    USAGE = ("data: " + json.dumps({{"object": "chat.completion.chunk", "id": "", "created": 0, "model": "bench",
        "choices": [], "usage": {{"prompt_tokens": 10, "completion_tokens": TOKENS, "total_tokens": 10 + TOKENS}}}})
        + "\\n\\ndata: [DONE]\\n\\n").encode()
    FULL = json.dumps({{"object": "chat.completion", "id": "", "created": 0, "model": "bench",
        "choices": [{{"index": 0, "message": {{"role": "assistant", "content": "tok " * TOKENS}},
        "finish_reason": "length", "logprobs": None}}],
        "usage": {{"prompt_tokens": 10, "completion_tokens": TOKENS, "total_tokens": 10 + TOKENS}}}}).encode()

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({{"type": message["type"] + ".complete"}})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "GET":
            payload = b'{{"object":"list","data":[{{"id":"bench","object":"model","created":0,"owned_by":"bench"}}]}}'
            await send({{"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}})
            await send({{"type": "http.response.body", "body": payload}})
            return
        request = json.loads(body or b"{{}}")
        await asyncio.sleep(LATENCY)
        if request.get("stream"):
            await send({{"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]}})
            for i in range(TOKENS):
                await send({{"type": "http.response.body", "body": _chunk("tok ", "length" if i == TOKENS - 1 else None),
                            "more_body": True}})
            await send({{"type": "http.response.body", "body": USAGE}})
            return
        await send({{"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}})
        await send({{"type": "http.response.body", "body": FULL}})
    """
)

BARE_RELAY = textwrap.dedent(
    """
    import os, aiohttp
    UPSTREAM = os.environ["BENCH_UPSTREAM"] + "/v1/chat/completions"
    session = None

    async def app(scope, receive, send):
        global session
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                else:
                    await session.close()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        async with session.post(UPSTREAM, data=body, headers={"content-type": "application/json"}) as upstream:
            headers = [(b"content-type", upstream.headers["content-type"].encode())]
            await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
            async for piece in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
    """
)

WRK_SCRIPT = textwrap.dedent(
    """
    wrk.method = "POST"
    wrk.body = [[{body}]]
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Authorization"] = "Bearer {key}"
    done = function(summary, latency, requests)
      local e = summary.errors
      io.write(string.format("RESULT %d %d %d %f %f\\n", summary.requests, e.status + e.connect + e.read + e.write + e.timeout,
        summary.duration, latency:percentile(50), latency:percentile(99)))
    end
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 120.0, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as error:
            if error.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {timeout:.0f}s")


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f}s")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)


def start(name: str, command: list[str], env: dict[str, str], log_dir: Path, cwd: Path = REPO) -> Proc:
    log = (log_dir / f"{name}.log").open("wb")
    popen = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return Proc(name, popen)


def uvicorn(app: str, port: int, app_dir: Path | None = None) -> list[str]:
    command = [
        PY,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    return [*command, "--app-dir", str(app_dir)] if app_dir else command


# --- setup --------------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk (apt-get)...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    return shutil.which("wrk") or "wrk"


def ensure_litellm() -> Path:
    binary = LITELLM_VENV / "bin" / "litellm"
    if binary.exists():
        return binary
    print(
        f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} (first run only; minutes)...",
        flush=True,
    )
    subprocess.run(["python3.11", "-m", "venv", str(LITELLM_VENV)], check=True)
    pip = LITELLM_VENV / "bin" / "pip"
    subprocess.run([str(pip), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"], check=True)
    return binary


def create_objects(responder_url: str) -> None:
    """Runs in a child with the bench database: the objects the gateway needs, via the services."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    import django

    django.setup()
    from decimal import Decimal

    from controlplane.services.audit import Actor
    from controlplane.services.backends import ReplicaSpec, backend_create
    from controlplane.services.budgets import budget_create
    from controlplane.services.catalog import model_version_create
    from controlplane.services.endpoints import TrafficEntry, endpoint_create
    from controlplane.services.keys import api_key_create
    from controlplane.services.releases import release_create
    from controlplane.services.teams import team_create

    actor = Actor.system("bench")
    slug = f"bench-{int(time.time())}"
    team = team_create(name=slug, slug=slug, actor=actor)
    backend = backend_create(
        team=team,
        name="responder",
        kind="tgi",
        actor=actor,
        replicas=[ReplicaSpec(url=responder_url)],
        settings={"max_concurrency": 10_000},
    )
    model = model_version_create(
        team=team,
        name="bench-model",
        backend=backend,
        actor=actor,
        hf_repo_id="bench/model",
        hf_revision="0" * 40,
        context_window=4096,
        input_price_per_mtok=Decimal("0.10"),
        output_price_per_mtok=Decimal("0.20"),
    )
    release = release_create(team=team, name="bench-v1", model_version=model, actor=actor)
    endpoint = endpoint_create(team=team, name="bench", actor=actor, traffic=[TrafficEntry(release, 100)])
    _, secret = api_key_create(
        team=team,
        name="bench",
        scopes=["inference"],
        actor=actor,
        endpoints=[endpoint],
        rpm_limit=100_000_000,
        tpm_limit=2_000_000_000,
        concurrency_limit=10_000,
    )
    budget_create(
        team=team, name="bench", scope="team", period="month", limit_usd=Decimal(1_000_000), actor=actor
    )
    print(f"KEY {secret}")


def bench_database(stack_url: str) -> str:
    return stack_url.rsplit("/", 1)[0] + "/switchboard_gwbench"


# --- measuring ----------------------------------------------------------------------------------------


@dataclass
class Result:
    target: str
    mode: str
    concurrency: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float


def run_wrk(
    wrk: str, url: str, key: str, *, stream: bool, concurrency: int, duration: int, workdir: Path
) -> tuple:
    body = json.dumps({**BODY, "stream": stream})
    script = workdir / f"wrk-{int(stream)}-{concurrency}.lua"
    script.write_text(WRK_SCRIPT.format(body=body, key=key))
    out = subprocess.run(
        [wrk, "-t1", f"-c{concurrency}", f"-d{duration}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=False,
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    requests, errors, duration_us, p50_us, p99_us = line.split()[1:]
    return (
        int(requests),
        int(errors),
        int(requests) / (int(duration_us) / 1e6),
        float(p50_us) / 1000,
        float(p99_us) / 1000,
    )


async def _ttft(url: str, key: str, samples: int) -> float:
    import aiohttp

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body = json.dumps({**BODY, "stream": True})
    times = []
    async with aiohttp.ClientSession() as session:
        for i in range(samples + 10):
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                first = None
                async for line in response.content:
                    if first is None and line.startswith(b"data:"):
                        first = time.perf_counter() - started
                if i >= 10 and first is not None:  # the first ten warm connections and caches
                    times.append(first * 1000)
    return statistics.median(times)


def measure(
    target: str, url: str, key: str, wrk: str, args: argparse.Namespace, workdir: Path
) -> list[Result]:
    """One round over every mode and concurrency for one target."""
    results = []
    run_wrk(wrk, url, key, stream=False, concurrency=4, duration=2, workdir=workdir)  # warm-up
    for stream in (False, True):
        for concurrency in CONCURRENCY:
            requests, errors, rps, p50, p99 = run_wrk(
                wrk, url, key, stream=stream, concurrency=concurrency, duration=args.duration, workdir=workdir
            )
            mode = "stream" if stream else "json"
            results.append(Result(target, mode, concurrency, requests, errors, rps, p50, p99))
            print(
                f"  {target:12s} {mode:6s} c={concurrency:<3d} {rps:9.0f} req/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms"
                f"  errors {errors}",
                flush=True,
            )
    return results


# --- report -------------------------------------------------------------------------------------------


def medians(results: list[Result]) -> list[Result]:
    """One result per (target, mode, concurrency): the median of each figure over the rounds."""
    groups: dict[tuple[str, str, int], list[Result]] = {}
    for r in results:
        groups.setdefault((r.target, r.mode, r.concurrency), []).append(r)
    return [
        Result(
            target,
            mode,
            concurrency,
            int(statistics.median(r.requests for r in group)),
            int(statistics.median(r.errors for r in group)),
            statistics.median(r.rps for r in group),
            statistics.median(r.p50_ms for r in group),
            statistics.median(r.p99_ms for r in group),
        )
        for (target, mode, concurrency), group in groups.items()
    ]


def report(results: list[Result], ttft: dict[str, float], overhead_header: list[float]) -> None:
    by = {(r.target, r.mode, r.concurrency): r for r in results}
    targets = sorted(
        {r.target for r in results}, key=["direct", "bare-relay", "switchboard", "litellm"].index
    )
    print("\nAdded latency over the direct path (ms; p50 / p99), and throughput:")
    print(
        f"{'target':12s} {'mode':6s} "
        + "  ".join(f"{'c=' + str(c):>17s}" for c in CONCURRENCY)
        + "   max req/s"
    )
    for target in targets:
        for mode in ("json", "stream"):
            cells = []
            for c in CONCURRENCY:
                r, d = by.get((target, mode, c)), by[("direct", mode, c)]
                cells.append(
                    f"{r.p50_ms - d.p50_ms:7.2f} / {r.p99_ms - d.p99_ms:7.2f}" if r else f"{'-':>17s}"
                )
            best = max((by[(target, mode, c)].rps for c in CONCURRENCY if (target, mode, c) in by), default=0)
            print(f"{target:12s} {mode:6s} " + "  ".join(cells) + f"   {best:9.0f}")
    print("\nTTFT at concurrency 1 (median ms; added over direct):")
    for target, value in ttft.items():
        print(f"  {target:12s} {value:7.2f}  (+{value - ttft['direct']:.2f})")
    if overhead_header:
        print(
            f"\nSwitchboard's own x-switchboard-overhead-ms, median of {len(overhead_header)}: "
            f"{statistics.median(overhead_header):.3f} ms"
        )
    for mode in ("json", "stream"):
        sb = max(by[("switchboard", mode, c)].rps for c in CONCURRENCY)
        bare = max(by[("bare-relay", mode, c)].rps for c in CONCURRENCY)
        line = f"{mode}: Switchboard max {sb:.0f} req/s = {sb / bare:.0%} of the bare relay's {bare:.0f}"
        if ("litellm", mode, 1) in by:
            ll = max(by[("litellm", mode, c)].rps for c in CONCURRENCY)
            line += f"; {sb / ll:.1f}x LiteLLM's {ll:.0f}"
        print(line)
    report_goals(by)


def _added(by: dict[tuple[str, str, int], Result], target: str, mode: str, c: int, field: str) -> float:
    return float(getattr(by[(target, mode, c)], field) - getattr(by[("direct", mode, c)], field))


def report_goals(by: dict[tuple[str, str, int], Result]) -> None:
    """The gateway's goals (issue 5) beside what this run measured."""
    print("\nGoals, measured (json / stream):")
    high = CONCURRENCY[-1]
    p50 = [_added(by, "switchboard", m, 1, "p50_ms") for m in ("json", "stream")]
    print(
        f"  added p50 at c=1 <= {GOAL_P50_C1_MS:g} ms:      {p50[0]:6.2f} / {p50[1]:6.2f} ms   "
        + ("met" if max(p50) <= GOAL_P50_C1_MS else "NOT met")
    )
    p99 = [_added(by, "switchboard", m, high, "p99_ms") for m in ("json", "stream")]
    bare = [_added(by, "bare-relay", m, high, "p99_ms") for m in ("json", "stream")]
    print(
        f"  added p99 at c={high} <= {GOAL_P99_C64_MS:g} ms:    {p99[0]:6.2f} / {p99[1]:6.2f} ms   "
        + ("met" if max(p99) <= GOAL_P99_C64_MS else "NOT met")
        + f" (the bare relay alone adds {bare[0]:.2f} / {bare[1]:.2f};"
        f" Switchboard adds {p99[0] - bare[0]:.2f} / {p99[1] - bare[1]:.2f} on top of it)"
    )
    if ("litellm", "json", 1) not in by:
        print(f"  throughput >= {GOAL_LITELLM_RATIO:g}x LiteLLM:    not measured (--skip-litellm)")
        return
    ratios = []
    for mode in ("json", "stream"):
        sb = max(by[("switchboard", mode, c)].rps for c in CONCURRENCY)
        ratios.append(sb / max(by[("litellm", mode, c)].rps for c in CONCURRENCY))
    print(
        f"  throughput >= {GOAL_LITELLM_RATIO:g}x LiteLLM:      {ratios[0]:5.1f}x / {ratios[1]:5.1f}x    "
        + ("met" if min(ratios) >= GOAL_LITELLM_RATIO else "NOT met")
    )


def sample_overhead_header(url: str, key: str, count: int = 50) -> list[float]:
    values = []
    for _ in range(count):
        request = urllib.request.Request(
            url,
            data=json.dumps(BODY).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            values.append(float(response.headers["x-switchboard-overhead-ms"]))
    return values


def litellm_config(workdir: Path, responder: str) -> Path:
    path = workdir / "litellm.yaml"
    path.write_text(
        textwrap.dedent(f"""
        model_list:
          - model_name: bench
            litellm_params:
              model: openai/bench
              api_base: {responder}/v1
              api_key: dummy
        litellm_settings:
          telemetry: false
        general_settings:
          master_key: sk-bench-master-key
        """)
    )
    return path


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over every target; medians reported")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--create-objects", metavar="RESPONDER_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.create_objects:
        create_objects(args.create_objects)
        return 0
    wrk = ensure_wrk()
    litellm = None if args.skip_litellm else ensure_litellm()
    workdir = Path(tempfile.mkdtemp(prefix="sb-gwbench-"))
    procs: list[Proc] = []
    from controlplane.stack import EmbeddedStack, _create_database

    stack = EmbeddedStack(root=workdir / "stack")
    try:
        addresses = stack.start()
        _create_database(stack._postgres, "switchboard_gwbench")
        env = {
            **os.environ,
            "REDIS_URL": addresses["REDIS_URL"],
            "DATABASE_URL": bench_database(addresses["DATABASE_URL"]),
            "SWITCHBOARD_DATA_DIR": str(workdir / "stack"),
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, cwd=REPO, check=True)
        (workdir / "responder.py").write_text(RESPONDER)
        (workdir / "bare_relay.py").write_text(BARE_RELAY)
        ports = {name: free_port() for name in ("responder", "relay", "switchboard", "litellm")}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        procs.append(start("responder", uvicorn("responder:app", ports["responder"], workdir), env, workdir))
        wait_http(urls["responder"] + "/v1/models")
        made = subprocess.run(
            [PY, __file__, "--create-objects", urls["responder"]],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode:
            raise RuntimeError(f"creating the bench objects failed:\n{made.stdout}\n{made.stderr}")
        key = next(line.split()[1] for line in made.stdout.splitlines() if line.startswith("KEY "))
        procs.append(
            start(
                "bare-relay",
                uvicorn("bare_relay:app", ports["relay"], workdir),
                {**env, "BENCH_UPSTREAM": urls["responder"]},
                workdir,
            )
        )
        procs.append(
            start("switchboard", uvicorn("controlplane.asgi:application", ports["switchboard"]), env, workdir)
        )
        wait_port(ports["relay"])
        wait_http(urls["switchboard"] + "/healthz")
        targets = {
            "direct": (urls["responder"], ""),
            "bare-relay": (urls["relay"], ""),
            "switchboard": (urls["switchboard"], key),
        }
        if litellm is not None:
            ll_env = {k: v for k, v in env.items() if k not in ("DATABASE_URL", "REDIS_URL")}
            ll_env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
            procs.append(
                start(
                    "litellm",
                    [
                        str(litellm),
                        "--config",
                        str(litellm_config(workdir, urls["responder"])),
                        "--port",
                        str(ports["litellm"]),
                        "--host",
                        "127.0.0.1",
                        "--num_workers",
                        "1",
                    ],
                    ll_env,
                    workdir,
                )
            )
            wait_http(urls["litellm"] + "/health/liveliness", timeout=300)
            targets["litellm"] = (urls["litellm"], "sk-bench-master-key")
        print(
            f"upstream latency {LATENCY_MS} ms, {STREAM_TOKENS} tokens per stream, wrk -t1, {args.duration}s per run",
            flush=True,
        )
        results: list[Result] = []
        ttfts: dict[str, list[float]] = {name: [] for name in targets}
        for round_number in range(args.repeat):
            if args.repeat > 1:
                print(f"round {round_number + 1} of {args.repeat}", flush=True)
            for name, (base, target_key) in targets.items():
                url = base + "/v1/chat/completions"
                results += measure(name, url, target_key, wrk, args, workdir)
                ttfts[name].append(asyncio.run(_ttft(url, target_key, 100)))
        overhead = sample_overhead_header(urls["switchboard"] + "/v1/chat/completions", key)
        ttft = {name: statistics.median(values) for name, values in ttfts.items()}
        report(medians(results), ttft, overhead)
        return 0
    finally:
        for proc in reversed(procs):
            proc.stop()
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
