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
from typing import Literal

import redis.asyncio as aioredis

from serving.catalog import BudgetView, Limits
from serving.gateway.errors import BudgetExceeded, RateLimited, Unavailable

logger = logging.getLogger(__name__)

WINDOW_MS = 60_000
LEASE_SLACK_MS = 30_000
NANO_PER_USD = Decimal(1_000_000_000)

# Keys: one ledger key per check (its sorted set); the running sum and, for budgets, the settled
# spend live beside it under the same hash tag (`<key>:s`, `<key>:p`). ARGV[2] is one compact spec
# string, "kind,limit,amount,hold_ms,seed,seed_ttl_s;..." (one argument instead of forty: packing
# arguments is most of a Redis call's cost in the client).
ADMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rid = ARGV[1]
local specs = {}
for kind, limit, amount, hold, seed, ttl in string.gmatch(ARGV[2], '(%a),(-?%d+),(%d+),(%d+),(%d+),(%d+);') do
  specs[#specs + 1] = {kind, tonumber(limit), amount, tonumber(hold), seed, tonumber(ttl)}
end
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
for i, spec in ipairs(specs) do
  local kind, limit, amount = spec[1], spec[2], tonumber(spec[3])
  local z = KEYS[i]
  local used = purge(z, z .. ':s')
  if kind == 'b' then
    local spent = z .. ':p'
    if spec[6] > 0 then redis.call('SET', spent, spec[5], 'NX', 'EX', spec[6])
    else redis.call('SET', spent, spec[5], 'NX') end
    used = used + tonumber(redis.call('GET', spent))
  end
  if limit >= 0 and used + amount > limit then
    local retry = 1000
    if kind == 'w' then
      local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
      if first[2] then retry = tonumber(first[2]) - now end
    end
    return {0, i - 1, retry}
  end
  remaining[i] = limit >= 0 and (limit - used - amount) or -1
end
for i, spec in ipairs(specs) do
  local z, amount, hold = KEYS[i], spec[3], spec[4]
  redis.call('ZADD', z, now + hold, rid .. '|' .. amount)
  redis.call('INCRBY', z .. ':s', amount)
  if redis.call('PTTL', z) < hold then
    redis.call('PEXPIRE', z, hold + 1000)
    redis.call('PEXPIRE', z .. ':s', hold + 1000)
  end
end
return {1, unpack(remaining)}
"""

# Settles many requests at once. ARGV[1]: "key_index,kind,rid,reserved,actual,seed,seed_ttl_s;..."
# Window ledgers keep the member's time and swap its amount for the actual one; leases end;
# budgets add the actual cost to the settled spend.
SETTLE_LUA = """
for ki, kind, rid, reserved, actual, seed, ttl in
    string.gmatch(ARGV[1], '(%d+),(%a),([^,]+),(%d+),(%d+),(%d+),(%d+);') do
  local z = KEYS[tonumber(ki)]
  local member = rid .. '|' .. reserved
  if kind == 'w' then
    local score = redis.call('ZSCORE', z, member)
    if score then
      redis.call('ZREM', z, member)
      redis.call('ZADD', z, score, rid .. '|' .. actual)
      redis.call('INCRBY', z .. ':s', tonumber(actual) - tonumber(reserved))
    end
  else
    if redis.call('ZREM', z, member) == 1 then redis.call('DECRBY', z .. ':s', reserved) end
    if kind == 'b' then
      local spent = z .. ':p'
      if tonumber(ttl) > 0 then redis.call('SET', spent, seed, 'NX', 'EX', ttl)
      else redis.call('SET', spent, seed, 'NX') end
      redis.call('INCRBY', spent, actual)
    end
  end
end
return 1
"""

SETTLE_BATCH = 256
REDIS_TIMEOUT_S = 1.0

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


def _spec(ledgers: list[Ledger]) -> str:
    return "".join(f"{x.kind},{x.limit},{x.amount},{x.hold_ms},{x.seed},{x.seed_ttl_s};" for x in ledgers)


@dataclass(frozen=True, slots=True)
class _Settlement:
    reservation: Reservation
    tokens: int
    cost_nano: int


class Admission:
    """Reserves in one script call per request; settles in batches, off the request path.

    Settling late only holds reservations a few milliseconds longer, which can refuse but never
    over-admit: the safe direction. Batching makes the request path one Redis call, not two.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._admit = client.register_script(ADMIT_LUA)
        self._settle = client.register_script(SETTLE_LUA)
        self._pending: list[_Settlement] = []
        self._wake = asyncio.Event()

    async def reserve(self, request_id: str, ledgers: list[Ledger]) -> Reservation:
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                result = await self._admit(keys=[x.key for x in ledgers], args=[request_id, _spec(ledgers)])
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
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

    def settle(self, reservation: Reservation, *, tokens: int, cost_nano: int) -> None:
        """Queues the swap of reserved amounts for actual ones; `run` applies it within milliseconds."""
        if any(ledger.unit != "requests" for ledger in reservation.ledgers):
            self._pending.append(_Settlement(reservation, tokens, cost_nano))
            self._wake.set()

    async def run(self) -> None:
        """Applies queued settlements in batches; on Redis errors retries, never drops."""
        delay = 0.1
        while True:
            await self._wake.wait()
            await asyncio.sleep(0.002)  # let a few settlements gather: one script call for many
            self._wake.clear()
            while self._pending:
                batch = self._pending[:SETTLE_BATCH]
                try:
                    async with asyncio.timeout(REDIS_TIMEOUT_S * 5):
                        await self._apply(batch)
                except (aioredis.RedisError, OSError, TimeoutError):
                    logger.error("settling %d requests failed; retrying in %.1fs", len(batch), delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                delay = 0.1
                del self._pending[: len(batch)]

    async def flush(self) -> None:
        while self._pending:
            batch = self._pending[:SETTLE_BATCH]
            await self._apply(batch)
            del self._pending[: len(batch)]

    async def _apply(self, batch: list[_Settlement]) -> None:
        keys: dict[str, int] = {}
        parts = []
        for item in batch:
            for ledger in item.reservation.ledgers:
                if ledger.unit == "requests":
                    continue
                index = keys.setdefault(ledger.key, len(keys) + 1)
                actual = (
                    item.cost_nano
                    if ledger.kind == "b"
                    else item.tokens
                    if ledger.kind == "w"
                    else ledger.amount
                )
                parts.append(
                    f"{index},{ledger.kind},{item.reservation.request_id},{ledger.amount},{actual},"
                    f"{ledger.seed},{ledger.seed_ttl_s};"
                )
        await self._settle(keys=list(keys), args=["".join(parts)])


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
