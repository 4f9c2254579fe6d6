"""The usage ledger's write path: off the request path, batched, exactly once.

1. The gateway appends one record per request to an in-process buffer: a tuple in RECORD_FIELDS
   order, no I/O and no encoding on the request.
2. A background task encodes the buffer (one JSON array a record; fields are only ever appended,
   so a shorter array is an older layout whose missing fields take their defaults), pushes it to
   the Redis list `sb:{usage}:queue` every 25 ms (small batches: encoding one holds the event
   loop, ~4 µs a record) and, at most once a second, asks Celery to drain. If Redis is down the
   records stay in the (bounded) buffer and are retried; overflow is counted and logged as an
   error, never dropped silently.
3. The drain task claims a batch atomically (a Lua script moves it from the queue to a
   per-batch processing list and notes the claim time), inserts it with
   INSERT ... ON CONFLICT (request_id) DO NOTHING, adds the cost of the rows it actually inserted
   to Budget.spent_usd with F() in the same transaction, and then deletes the processing list.
4. A worker that dies mid-batch leaves the processing list behind; the sweeper (Celery beat)
   puts batches older than a visibility timeout back on the queue. Replaying a batch inserts
   nothing twice (the unique request_id) and adds no spend twice (only inserted rows count).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import redis
import redis.asyncio as aioredis
from django.db import connection, transaction
from django.db.models import F

from controlplane.models import Budget
from serving import metrics

logger = logging.getLogger(__name__)

QUEUE = "sb:{usage}:queue"
BATCHES = "sb:{usage}:batches"
DEAD = "sb:{usage}:dead"
BATCH_SIZE = 500
BUFFER_LIMIT = 100_000
VISIBILITY_TIMEOUT_S = 120.0
# Test hook: seconds to sleep after a batch is committed and before its processing list is
# deleted, so a test can kill the worker in exactly the window that needs the sweeper.
PAUSE_ENV = "SWITCHBOARD_USAGE_TEST_PAUSE_S"

CLAIM_LUA = """
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #items == 0 then return {} end
redis.call('LTRIM', KEYS[1], #items, -1)
redis.call('RPUSH', KEYS[2], unpack(items))
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
return items
"""

REQUEUE_LUA = """
local items = redis.call('LRANGE', KEYS[2], 0, -1)
for i = 1, #items, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(items, i, math.min(i + 999, #items)))
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return #items
"""

COLUMNS = (
    "request_id",
    "occurred_at",
    "team_id",
    "api_key_id",
    "endpoint_id",
    "release_id",
    "model_version_id",
    "endpoint_name",
    "release_name",
    "replica",
    "api",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "ttft_ms",
    "latency_ms",
    "status",
    "http_status",
    "finish_reason",
    "error_type",
    "tokens_in_reserved",
    "tokens_out_reserved",
)
# A record as the gateway buffers it: the columns, then the budgets its cost counts against.
RECORD_FIELDS = (*COLUMNS, "budgets")
_DEFAULTS = {"tokens_in_reserved": 0, "tokens_out_reserved": 0}


def processing_key(batch_id: str) -> str:
    return f"sb:{{usage}}:processing:{batch_id}"


# --- in the web process ---------------------------------------------------------------------------


class UsageBuffer:
    def __init__(self, client: aioredis.Redis, *, limit: int = BUFFER_LIMIT) -> None:
        self.client = client
        self.limit = limit
        self.pending: deque[tuple[Any, ...]] = deque()
        self.overflowed = 0
        self._last_drain_request = 0.0
        self._drain_owed = False  # records pushed since the last nudge
        self._last_error_log = 0.0

    def add(self, record: tuple[Any, ...]) -> None:
        """Buffers one record (RECORD_FIELDS order); encoding and I/O happen in `flush`."""
        if len(self.pending) >= self.limit:
            self.overflowed += 1
            logger.error(
                "usage buffer full (%d records, Redis unreachable?): record %s lost",
                self.limit,
                record[0],
            )
            return
        self.pending.append(record)

    async def run(self, interval_s: float = 0.025) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.flush()
            await self._request_drain()

    async def flush(self) -> None:
        metrics.USAGE_BUFFERED.set(len(self.pending))
        while self.pending:
            batch = [_encode(self.pending[i]) for i in range(min(BATCH_SIZE, len(self.pending)))]
            try:
                async with asyncio.timeout(5.0):
                    await self.client.rpush(QUEUE, *batch)
            except (aioredis.RedisError, OSError, TimeoutError):
                self._log_failure()
                return
            for _ in batch:
                self.pending.popleft()
            self._drain_owed = True
            metrics.USAGE_BUFFERED.set(len(self.pending))

    def _log_failure(self) -> None:
        now = time.monotonic()
        if now - self._last_error_log > 5:
            self._last_error_log = now
            logger.error(
                "usage records cannot reach Redis: %d buffered in process, retrying", len(self.pending)
            )

    async def _request_drain(self) -> None:
        """At most one nudge a second, and always one after the last push (never left owed)."""
        now = time.monotonic()
        if not self._drain_owed or now - self._last_drain_request < 1.0:
            return
        self._last_drain_request = now
        self._drain_owed = False
        try:
            await asyncio.to_thread(_send_drain)
        except Exception:  # the beat schedule drains too; a lost nudge only delays
            logger.warning("could not enqueue the usage drain task", exc_info=True)


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # built once: json.dumps(separators=...) builds one a call


def _encode(record: tuple[Any, ...]) -> bytes:
    return _COMPACT.encode(record).encode()


def _send_drain() -> None:
    from controlplane.celery import app

    app.send_task("serving.usage_drain")


# --- in the Celery worker -------------------------------------------------------------------------


def _sync_client() -> redis.Redis:
    from django.conf import settings

    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)


def drain(*, batch_size: int = BATCH_SIZE, max_batches: int = 50) -> int:
    """Claims and writes batches until the queue is empty (or max_batches). Returns rows inserted."""
    client = _sync_client()
    claim = client.register_script(CLAIM_LUA)
    inserted = 0
    try:
        for _ in range(max_batches):
            batch_id = uuid.uuid4().hex
            items = claim(
                keys=[QUEUE, processing_key(batch_id), BATCHES], args=[batch_size, time.time(), batch_id]
            )
            if not items:
                break
            inserted += write_batch(items)
            _pause_for_tests()
            client.delete(processing_key(batch_id))
            client.zrem(BATCHES, batch_id)
    finally:
        client.close()
    return inserted


def sweep(*, older_than_s: float = VISIBILITY_TIMEOUT_S) -> int:
    """Puts batches claimed by workers that never finished back on the queue."""
    client = _sync_client()
    requeue = client.register_script(REQUEUE_LUA)
    moved = 0
    try:
        for raw in client.zrangebyscore(BATCHES, "-inf", time.time() - older_than_s):
            batch_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            moved += int(requeue(keys=[QUEUE, processing_key(batch_id), BATCHES], args=[batch_id]))
    finally:
        client.close()
    if moved:
        logger.warning("usage sweeper requeued %d records from unfinished batches", moved)
    return moved


def _pause_for_tests() -> None:
    pause = float(os.environ.get(PAUSE_ENV) or 0)
    if pause > 0:
        time.sleep(pause)


def _parse(items: Iterable[bytes]) -> list[dict[str, Any]]:
    records = []
    for item in items:
        try:
            record = _as_dict(json.loads(item))
            record["request_id"]
        except (ValueError, KeyError, TypeError):
            logger.error("unreadable usage record moved to %s", DEAD)
            _sync_client().rpush(DEAD, item)
            continue
        records.append(record)
    return records


def _as_dict(value: Any) -> dict[str, Any]:
    """A record as a dict: arrays are RECORD_FIELDS positionally (possibly an older, shorter
    layout); objects are the layout before arrays."""
    if isinstance(value, list):
        if not 0 < len(value) <= len(RECORD_FIELDS):
            raise ValueError("usage record of unknown layout")
        return dict(zip(RECORD_FIELDS, value, strict=False))
    if not isinstance(value, dict):
        raise TypeError("usage record is neither an array nor an object")
    return value


def _row(record: dict[str, Any]) -> list[Any]:
    occurred = datetime.fromtimestamp(float(record["occurred_at"]), tz=UTC)
    values = {**record, "occurred_at": occurred, "cost_usd": Decimal(str(record.get("cost_usd", "0")))}
    return [values.get(column, _DEFAULTS.get(column)) for column in COLUMNS]


def write_batch(items: list[bytes]) -> int:
    records = _parse(items)
    if not records:
        return 0
    placeholders = ",".join(["(" + ",".join(["%s"] * len(COLUMNS)) + ")"] * len(records))
    sql = (
        f"INSERT INTO serving_usagerecord ({','.join(COLUMNS)}) VALUES {placeholders} "  # noqa: S608 (fixed columns)
        "ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
    )
    params = [value for record in records for value in _row(record)]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            inserted = {row[0] for row in cursor.fetchall()}
        _add_spend([r for r in records if r["request_id"] in inserted])
    metrics.USAGE_WRITTEN.inc(len(inserted))
    return len(inserted)


def _add_spend(records: list[dict[str, Any]]) -> None:
    totals: dict[tuple[int, str], Decimal] = {}
    for record in records:
        cost = Decimal(str(record.get("cost_usd", "0")))
        if not cost:
            continue
        for budget_id, period_start in record.get("budgets", []):
            key = (int(budget_id), str(period_start))
            totals[key] = totals.get(key, Decimal(0)) + cost
    # Sorted: two drains updating the same budgets lock them in one order, so never deadlock.
    for (budget_id, period_start), total in sorted(totals.items()):
        Budget.objects.filter(pk=budget_id, period_start=datetime.fromisoformat(period_start)).update(
            spent_usd=F("spent_usd") + total
        )
