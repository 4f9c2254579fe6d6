"""Admission: every rate limit and budget of a request, checked and taken in ONE Redis script.

Each limit is a ledger: a sorted set of `<request id>|<amount>` members scored by the time they
stop counting, plus a running sum. Requests-per-minute and tokens-per-minute are sliding
60-second windows; concurrency entries and budget reservations are leases that end when the
request settles, or at their deadline if a process died holding them (so nothing leaks for good).
The script first purges what expired, then checks every ledger, and only if all pass adds to all
of them: all or nothing, atomic across every web process. Never check-then-record.

Budgets: a counter of settled spend per budget and period (seeded from Budget.spent_usd when
missing) plus the reservation ledger. A hard budget refuses when spent + reserved + this request's
worst case (prompt tokens + max_tokens at the model's prices) exceeds the limit; a soft budget
never refuses but still counts. Money is integer nano-dollars in Redis, exact in Lua's doubles up
to $9M per budget. Redis keys carry the team as a hash tag, so one request's keys share a Redis
Cluster slot.

Redis unreachable: 503 with Retry-After, never a pass: budgets fail closed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any, Literal

import redis.asyncio as aioredis

from serving.catalog import BudgetView, Limits
from serving.gateway.errors import BudgetExceeded, RateLimited, Unavailable

logger = logging.getLogger(__name__)

WINDOW_MS = 60_000
LEASE_SLACK_MS = 30_000
NANO_PER_USD = Decimal(1_000_000_000)

_CHECK_STRIDE = 6  # kind, limit, amount, hold_ms, seed, seed_ttl_s
_KEY_STRIDE = 3  # ledger zset, ledger sum, spent counter (budgets only)

ADMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rid = ARGV[1]
local n = tonumber(ARGV[2])
local function purge(z, s)
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  if #expired > 0 then
    local total = 0
    for _, m in ipairs(expired) do total = total + tonumber(string.match(m, '|(%d+)$')) end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
    redis.call('DECRBY', s, total)
  end
  return tonumber(redis.call('GET', s) or '0')
end
local remaining = {}
for i = 0, n - 1 do
  local a = 3 + i * 6
  local kind, limit, amount = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local z, s, spent = KEYS[1 + i * 3], KEYS[2 + i * 3], KEYS[3 + i * 3]
  local used = purge(z, s)
  if kind == 'b' then
    local ttl = tonumber(ARGV[a + 5])
    if ttl > 0 then redis.call('SET', spent, ARGV[a + 4], 'NX', 'EX', ttl)
    else redis.call('SET', spent, ARGV[a + 4], 'NX') end
    used = used + tonumber(redis.call('GET', spent))
  end
  if limit >= 0 and used + amount > limit then
    local retry = 1000
    if kind == 'w' then
      local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
      if first[2] then retry = tonumber(first[2]) - now end
    end
    return {0, i, retry}
  end
  remaining[i + 1] = limit >= 0 and (limit - used - amount) or -1
end
for i = 0, n - 1 do
  local a = 3 + i * 6
  local amount, hold = ARGV[a + 2], tonumber(ARGV[a + 3])
  local z, s = KEYS[1 + i * 3], KEYS[2 + i * 3]
  redis.call('ZADD', z, now + hold, rid .. '|' .. amount)
  redis.call('INCRBY', s, amount)
  if redis.call('PTTL', z) < hold then
    redis.call('PEXPIRE', z, hold + 1000)
    redis.call('PEXPIRE', s, hold + 1000)
  end
end
return {1, unpack(remaining)}
"""

# Per touched ledger: kind, reserved, actual, seed, seed_ttl_s. Window ledgers keep the member's
# time and swap its amount for the actual one; leases end; budgets add the actual cost to spend.
SETTLE_LUA = """
local rid = ARGV[1]
local n = tonumber(ARGV[2])
for i = 0, n - 1 do
  local a = 3 + i * 5
  local kind, reserved, actual = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local z, s, spent = KEYS[1 + i * 3], KEYS[2 + i * 3], KEYS[3 + i * 3]
  local member = rid .. '|' .. ARGV[a + 1]
  if kind == 'w' then
    local score = redis.call('ZSCORE', z, member)
    if score then
      redis.call('ZREM', z, member)
      redis.call('ZADD', z, score, rid .. '|' .. ARGV[a + 2])
      redis.call('INCRBY', s, actual - reserved)
    end
  else
    if redis.call('ZREM', z, member) == 1 then redis.call('DECRBY', s, reserved) end
    if kind == 'b' then
      local ttl = tonumber(ARGV[a + 4])
      if ttl > 0 then redis.call('SET', spent, ARGV[a + 3], 'NX', 'EX', ttl)
      else redis.call('SET', spent, ARGV[a + 3], 'NX') end
      redis.call('INCRBY', spent, actual)
    end
  end
end
return 1
"""

Kind = Literal["w", "c", "b"]


@dataclass(frozen=True, slots=True)
class Ledger:
    """One limit a request is checked against."""

    name: str  # for the error message: "key requests per minute", "team budget 'ops'"
    scope: str  # key | team | endpoint | backend
    kind: Kind
    unit: Literal["requests", "tokens", "concurrency", "budget"]
    key: str
    limit: int  # -1: count but never refuse (soft budget)
    amount: int
    hold_ms: int
    seed: int = 0
    seed_ttl_s: int = 0
    budget_id: int | None = None
    budget_period_start: str = ""
    retry_after_s: int | None = None  # budgets: until the period ends


@dataclass(frozen=True, slots=True)
class Reservation:
    request_id: str
    ledgers: tuple[Ledger, ...]
    remaining_requests: int | None
    remaining_tokens: int | None


def nano_usd(tokens_in: int, tokens_out: int, price_in: Decimal, price_out: Decimal) -> int:
    """Cost in integer nano-dollars, rounded up so Redis never under-counts."""
    exact = (tokens_in * price_in + tokens_out * price_out) * NANO_PER_USD / Decimal(1_000_000)
    return int(exact.to_integral_value(rounding=ROUND_CEILING))


def cost_usd(tokens_in: int, tokens_out: int, price_in: Decimal, price_out: Decimal) -> Decimal:
    return (tokens_in * price_in + tokens_out * price_out) / Decimal(1_000_000)


def _limit_ledgers(scope: str, prefix: str, limits: Limits, *, tokens: int, lease_ms: int) -> list[Ledger]:
    out = []
    if limits.rpm is not None:
        out.append(
            Ledger(
                f"{scope} requests per minute",
                scope,
                "w",
                "requests",
                f"{prefix}:rpm",
                limits.rpm,
                1,
                WINDOW_MS,
            )
        )
    if limits.tpm is not None:
        out.append(
            Ledger(
                f"{scope} tokens per minute",
                scope,
                "w",
                "tokens",
                f"{prefix}:tpm",
                limits.tpm,
                tokens,
                WINDOW_MS,
            )
        )
    if limits.concurrency is not None:
        out.append(
            Ledger(
                f"{scope} concurrent requests",
                scope,
                "c",
                "concurrency",
                f"{prefix}:cc",
                limits.concurrency,
                1,
                lease_ms,
            )
        )
    return out


def _budget_ledger(team_prefix: str, budget: BudgetView, *, amount: int, lease_ms: int, now: float) -> Ledger:
    start = int(budget.period_start)
    ttl = int(budget.period_end - now) + 7 * 86400 if budget.period_end else 0
    retry = max(1, math.ceil(budget.period_end - now)) if budget.period_end else None
    return Ledger(
        name=f"{budget.scope} budget #{budget.id}",
        scope=budget.scope,
        kind="b",
        unit="budget",
        key=f"{team_prefix}:bud:{budget.uid}:{start}",
        limit=budget.limit_nano if budget.hard else -1,
        amount=amount,
        hold_ms=lease_ms,
        seed=budget.spent_nano,
        seed_ttl_s=max(ttl, 0),
        budget_id=budget.id,
        budget_period_start=budget.period_start_iso,
        retry_after_s=retry,
    )


@dataclass(frozen=True, slots=True)
class AdmissionScopes:
    """Who the request counts against; the ids are row uids (catalog.row_uid) or key lookup ids."""

    team: str
    key: str | None
    endpoint: str
    backend: str
    key_limits: Limits
    team_limits: Limits
    endpoint_limits: Limits
    backend_limits: Limits
    budgets: tuple[BudgetView, ...]


def plan(scopes: AdmissionScopes, *, tokens: int, cost_nano: int, lease_ms: int) -> list[Ledger]:
    """Every ledger a request must pass, in a fixed order (key, team, endpoint, backend, budgets)."""
    team = f"sb:{{t{scopes.team}}}"
    ledgers: list[Ledger] = []
    if scopes.key is not None:
        ledgers += _limit_ledgers(
            "key", f"{team}:key:{scopes.key}", scopes.key_limits, tokens=tokens, lease_ms=lease_ms
        )
    ledgers += _limit_ledgers("team", f"{team}:team", scopes.team_limits, tokens=tokens, lease_ms=lease_ms)
    ledgers += _limit_ledgers(
        "endpoint", f"{team}:ep:{scopes.endpoint}", scopes.endpoint_limits, tokens=tokens, lease_ms=lease_ms
    )
    ledgers += _limit_ledgers(
        "backend", f"{team}:be:{scopes.backend}", scopes.backend_limits, tokens=tokens, lease_ms=lease_ms
    )
    now = time.time()
    ledgers += [_budget_ledger(team, b, amount=cost_nano, lease_ms=lease_ms, now=now) for b in scopes.budgets]
    return ledgers


def _keys(ledgers: tuple[Ledger, ...] | list[Ledger]) -> list[str]:
    keys: list[str] = []
    for ledger in ledgers:
        keys += [f"{ledger.key}:z", f"{ledger.key}:sum", f"{ledger.key}:spent"]
    return keys


class Admission:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._admit = client.register_script(ADMIT_LUA)
        self._settle = client.register_script(SETTLE_LUA)

    async def reserve(self, request_id: str, ledgers: list[Ledger]) -> Reservation:
        args: list[Any] = [request_id, len(ledgers)]
        for ledger in ledgers:
            args += [ledger.kind, ledger.limit, ledger.amount, ledger.hold_ms, ledger.seed, ledger.seed_ttl_s]
        try:
            result = await self._admit(keys=_keys(ledgers), args=args)
        except (aioredis.RedisError, OSError) as exc:
            logger.error("admission failed: Redis unavailable (refusing: budgets fail closed)")
            raise Unavailable("rate limits and budgets cannot be checked right now; retry shortly") from exc
        if int(result[0]) == 0:
            raise _refusal(ledgers[int(result[1])], int(result[2]))
        remaining = [int(x) for x in result[1:]]
        return Reservation(
            request_id=request_id,
            ledgers=tuple(ledgers),
            remaining_requests=_least(ledgers, remaining, "requests"),
            remaining_tokens=_least(ledgers, remaining, "tokens"),
        )

    async def settle(self, reservation: Reservation, *, tokens: int, cost_nano: int) -> None:
        """Swaps reserved amounts for actual ones and ends the leases; retried, never dropped."""
        touched = [ledger for ledger in reservation.ledgers if ledger.unit != "requests"]
        if not touched:
            return
        args: list[Any] = [reservation.request_id, len(touched)]
        for ledger in touched:
            actual = cost_nano if ledger.kind == "b" else tokens if ledger.kind == "w" else ledger.amount
            args += [ledger.kind, ledger.amount, actual, ledger.seed, ledger.seed_ttl_s]
        delay = 0.1
        for attempt in range(8):
            try:
                await self._settle(keys=_keys(touched), args=args)
                return
            except (aioredis.RedisError, OSError):
                logger.error("settlement failed (attempt %d); retrying", attempt + 1)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        logger.critical(
            "settlement of %s abandoned after retries: leases expire on their own", reservation.request_id
        )


def _least(ledgers: list[Ledger], remaining: list[int], unit: str) -> int | None:
    values = [r for ledger, r in zip(ledgers, remaining, strict=False) if ledger.unit == unit and r >= 0]
    return min(values) if values else None


def _refusal(ledger: Ledger, retry_ms: int) -> RateLimited | BudgetExceeded:
    if ledger.unit == "budget":
        return BudgetExceeded(
            f"the {ledger.scope} budget is exhausted for this period: this request could cost up to "
            f"${Decimal(ledger.amount) / NANO_PER_USD:f}; lower max_tokens or raise the budget",
            retry_after=ledger.retry_after_s or 3600,
        )
    retry = max(1, math.ceil(retry_ms / 1000)) if ledger.kind == "w" else 1
    return RateLimited(f"rate limit reached: {ledger.name} (limit {ledger.limit})", retry_after=retry)
