"""Admission: every rate limit and budget of a request, checked and taken in ONE Redis script.

Each limit is a ledger: a sorted set of `<request id>|<amount>` members scored by the time they
stop counting (plus a running sum where amounts vary). Requests-per-minute and tokens-per-minute
are sliding 60-second windows; concurrency entries and budget reservations are leases that end
when the request settles, or at their deadline if a process died holding them (so nothing leaks
for good). The script first purges what expired, then checks every ledger, and only if all pass
adds to all of them: all or nothing, atomic across every web process. Never check-then-record.

Budgets: a counter of settled spend per budget and period (seeded from Budget.spent_usd when
missing) plus the reservation ledger. A hard budget refuses when spent + reserved + this request's
worst case (the prompt's token bound + max_tokens at the model's prices; resolve.py) exceeds the
limit; a soft budget never refuses but still counts. Money is integer nano-dollars in Redis,
exact in Lua's doubles up to $9M per budget. Redis keys carry the team as a hash tag, so one
request's keys share a Redis Cluster slot.

A request's ledgers are an `AdmissionPlan`, built once per (key, team, endpoint, release) views
and reused, and the script goes over the pipelined connection of rediswire.py: a request formats
two numbers and sends one pre-packed command.

Redis unreachable: 503 with Retry-After, never a pass: budgets fail closed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from serving.catalog import BudgetView, Limits
from serving.gateway.errors import BudgetExceeded, RateLimited, Unavailable
from serving.gateway.rediswire import RedisWire, RedisWireError, ScriptCall

logger = logging.getLogger(__name__)

WINDOW_MS = 60_000
LEASE_SLACK_MS = 30_000
NANO_PER_USD = Decimal(1_000_000_000)

# Keys: one ledger key per check, a sorted set of `<request id>|<amount>` scored by expiry. Kinds:
# 'r' a window of one-unit entries (requests per minute) and 'c' a lease of one unit (concurrency):
#     the live entries' count is the usage (ZCARD), nothing else to keep;
# 'w' a window of amounts (tokens per minute) and 'b' a budget lease (nano-dollars): a running
#     sum beside the set (`<key>:s`), and for budgets the settled spend (`<key>:p`).
# Everything shares the key's hash tag. ARGV[2] is one compact spec string,
# "kind,limit,amount,hold_ms,seed,seed_ttl_s;..." (one argument instead of forty: packing
# arguments is most of a Redis call's cost in the client). Steady state costs 4 Redis commands a
# one-unit ledger and 6-7 an amount ledger.
ADMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rid = ARGV[1]
local specs = {}
for kind, limit, amount, hold, seed, ttl in string.gmatch(ARGV[2], '(%a),(-?%d+),(%d+),(%d+),(%d+),(%d+);') do
  specs[#specs + 1] = {kind, tonumber(limit), amount, tonumber(hold), seed, tonumber(ttl)}
end
local function units(z)
  redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
  return redis.call('ZCARD', z)
end
local function amounts(z)
  local s = z .. ':s'
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  if #expired > 0 then
    local total = 0
    for _, m in ipairs(expired) do total = total + tonumber(string.match(m, '|(%d+)$')) end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
    return redis.call('DECRBY', s, total)
  end
  return tonumber(redis.call('GET', s) or '0')
end
local remaining = {}
for i, spec in ipairs(specs) do
  local kind, limit, amount = spec[1], spec[2], tonumber(spec[3])
  local z = KEYS[i]
  local used
  if kind == 'r' or kind == 'c' then used = units(z) else used = amounts(z) end
  if kind == 'b' then
    local spent = z .. ':p'
    local value = redis.call('GET', spent)
    if not value then
      value = spec[5]
      if spec[6] > 0 then redis.call('SET', spent, value, 'EX', spec[6])
      else redis.call('SET', spent, value) end
    end
    used = used + tonumber(value)
  end
  if limit >= 0 and used + amount > limit then
    local retry = 1000
    if kind == 'r' or kind == 'w' then
      local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
      if first[2] then retry = tonumber(first[2]) - now end
    end
    return {0, i - 1, retry}
  end
  remaining[i] = limit >= 0 and (limit - used - amount) or -1
end
for i, spec in ipairs(specs) do
  local z, kind, amount, hold = KEYS[i], spec[1], spec[3], spec[4]
  redis.call('ZADD', z, now + hold, rid .. '|' .. amount)
  local summed = kind == 'w' or kind == 'b'
  if summed then redis.call('INCRBY', z .. ':s', amount) end
  if redis.call('PTTL', z) < hold then
    redis.call('PEXPIRE', z, hold + 1000)
    if summed then redis.call('PEXPIRE', z .. ':s', hold + 1000) end
  end
end
return {1, unpack(remaining)}
"""

# Settles many requests at once. ARGV[1]: "key_index,kind,rid,reserved,actual,seed,seed_ttl_s;..."
# Token windows keep the entry's time and swap its amount for the actual one; leases end;
# budgets add the actual cost to the settled spend. (Request windows have nothing to settle.)
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
  elseif kind == 'c' then
    redis.call('ZREM', z, member)
  elseif kind == 'b' then
    if redis.call('ZREM', z, member) == 1 then redis.call('DECRBY', z .. ':s', reserved) end
    local spent = z .. ':p'
    if tonumber(ttl) > 0 then redis.call('SET', spent, seed, 'NX', 'EX', ttl)
    else redis.call('SET', spent, seed, 'NX') end
    redis.call('INCRBY', spent, actual)
  end
end
return 1
"""

SETTLE_BATCH = 256
REDIS_TIMEOUT_S = 1.0

Kind = Literal["r", "w", "c", "b"]
Unit = Literal["requests", "tokens", "concurrency", "budget"]


# --- ledgers and plans ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ledger:
    """One limit a request is checked against. What it takes from the limit follows its unit:
    one request or concurrency slot, the request's tokens, or its worst-case cost."""

    name: str  # for the error message: "key requests per minute", "team budget #3"
    scope: str  # key | team | endpoint | backend
    kind: Kind
    unit: Unit
    key: str
    limit: int  # -1: count but never refuse (soft budget)
    hold_ms: int
    seed: int = 0
    seed_ttl_s: int = 0
    budget_id: int | None = None
    budget_period_start: str = ""
    retry_after_s: int | None = None  # budgets: until the period ends


def _amount_field(unit: Unit) -> str:
    return {"requests": "1", "concurrency": "1", "tokens": "{tokens}", "budget": "{cost}"}[unit]


@dataclass(frozen=True, slots=True)
class AdmissionPlan:
    """Everything about a request's admission that does not depend on the request itself.

    Built once per (key, team, endpoint, release) and reused until the catalog reloads one of
    them, so a request only formats its two amounts into `spec` and sends one packed command.
    """

    ledgers: tuple[Ledger, ...]
    call: ScriptCall
    spec: str  # ADMIT_LUA's ARGV[2] with "{tokens}" and "{cost}" placeholders
    settles: bool  # False when every ledger is a request window: nothing to settle
    request_indexes: tuple[int, ...]
    token_indexes: tuple[int, ...]

    @classmethod
    def build(cls, ledgers: list[Ledger] | tuple[Ledger, ...], sha: bytes) -> AdmissionPlan:
        spec = "".join(
            f"{x.kind},{x.limit},{_amount_field(x.unit)},{x.hold_ms},{x.seed},{x.seed_ttl_s};"
            for x in ledgers
        )
        return cls(
            ledgers=tuple(ledgers),
            call=RedisWire.prepare(sha, [x.key for x in ledgers], nargs=2),
            spec=spec,
            settles=any(x.unit != "requests" for x in ledgers),
            request_indexes=tuple(i for i, x in enumerate(ledgers) if x.unit == "requests"),
            token_indexes=tuple(i for i, x in enumerate(ledgers) if x.unit == "tokens"),
        )


@dataclass(frozen=True, slots=True)
class Reservation:
    request_id: str
    plan: AdmissionPlan
    tokens: int
    cost_nano: int
    remaining_requests: int | None
    remaining_tokens: int | None

    def amount(self, ledger: Ledger) -> int:
        if ledger.unit == "tokens":
            return self.tokens
        return self.cost_nano if ledger.unit == "budget" else 1


def _limit_ledgers(scope: str, prefix: str, limits: Limits, *, lease_ms: int) -> list[Ledger]:
    out = []
    if limits.rpm is not None:
        out.append(
            Ledger(
                f"{scope} requests per minute", scope, "r", "requests", f"{prefix}:rpm", limits.rpm, WINDOW_MS
            )
        )
    if limits.tpm is not None:
        out.append(
            Ledger(f"{scope} tokens per minute", scope, "w", "tokens", f"{prefix}:tpm", limits.tpm, WINDOW_MS)
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
                lease_ms,
            )
        )
    return out


def _budget_ledger(team_prefix: str, budget: BudgetView, *, lease_ms: int, now: float) -> Ledger:
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


def plan(scopes: AdmissionScopes, *, lease_ms: int) -> list[Ledger]:
    """Every ledger a request must pass, in a fixed order (key, team, endpoint, backend, budgets)."""
    team = f"sb:{{t{scopes.team}}}"
    ledgers: list[Ledger] = []
    if scopes.key is not None:
        ledgers += _limit_ledgers("key", f"{team}:key:{scopes.key}", scopes.key_limits, lease_ms=lease_ms)
    ledgers += _limit_ledgers("team", f"{team}:team", scopes.team_limits, lease_ms=lease_ms)
    ledgers += _limit_ledgers(
        "endpoint", f"{team}:ep:{scopes.endpoint}", scopes.endpoint_limits, lease_ms=lease_ms
    )
    ledgers += _limit_ledgers(
        "backend", f"{team}:be:{scopes.backend}", scopes.backend_limits, lease_ms=lease_ms
    )
    now = time.time()
    ledgers += [_budget_ledger(team, b, lease_ms=lease_ms, now=now) for b in scopes.budgets]
    return ledgers


@dataclass(frozen=True, slots=True)
class _Settlement:
    reservation: Reservation
    tokens: int
    cost_nano: int


class Admission:
    """Reserves in one script call per request; settles in batches, off the request path.

    Settling late only holds reservations a few milliseconds longer, which can refuse but never
    over-admit: the safe direction. Batching makes the request path one Redis call, not two.
    Both scripts go over one pipelined connection (rediswire).
    """

    def __init__(self, wire: RedisWire) -> None:
        self.wire = wire
        self.admit_sha = wire.script(ADMIT_LUA)
        self._settle_sha = wire.script(SETTLE_LUA)
        self._pending: list[_Settlement] = []
        self._wake = asyncio.Event()

    def build_plan(self, ledgers: list[Ledger] | tuple[Ledger, ...]) -> AdmissionPlan:
        return AdmissionPlan.build(ledgers, self.admit_sha)

    async def reserve(
        self, request_id: str, plan: AdmissionPlan, *, tokens: int, cost_nano: int
    ) -> Reservation:
        spec = plan.spec.format(tokens=tokens, cost=cost_nano) if plan.settles else plan.spec
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                result = await self.wire.evalsha(plan.call, request_id, spec)
        except (RedisWireError, OSError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                self.wire.reset()
            logger.error("admission failed: Redis unavailable (refusing: budgets fail closed): %s", exc)
            raise Unavailable("rate limits and budgets cannot be checked right now; retry shortly") from exc
        if result[0] == 0:
            ledger = plan.ledgers[result[1]]
            raise _refusal(
                ledger, amount=tokens if ledger.unit == "tokens" else cost_nano, retry_ms=result[2]
            )
        return Reservation(
            request_id=request_id,
            plan=plan,
            tokens=tokens,
            cost_nano=cost_nano,
            remaining_requests=_least(result, plan.request_indexes),
            remaining_tokens=_least(result, plan.token_indexes),
        )

    def settle(self, reservation: Reservation, *, tokens: int, cost_nano: int) -> None:
        """Queues the swap of reserved amounts for actual ones; `run` applies it within milliseconds."""
        if reservation.plan.settles:
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
                except (RedisWireError, OSError, TimeoutError) as exc:
                    if isinstance(exc, TimeoutError):
                        self.wire.reset()
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
            reservation = item.reservation
            rid = reservation.request_id
            for ledger in reservation.plan.ledgers:
                if ledger.unit == "requests":
                    continue
                reserved = reservation.amount(ledger)
                actual = (
                    item.cost_nano if ledger.kind == "b" else item.tokens if ledger.kind == "w" else reserved
                )
                if ledger.kind == "w" and actual == reserved:
                    continue  # a window entry that already holds the right amount
                index = keys.setdefault(ledger.key, len(keys) + 1)
                parts.append(
                    f"{index},{ledger.kind},{rid},{reserved},{actual},{ledger.seed},{ledger.seed_ttl_s};"
                )
        if parts:
            call = RedisWire.prepare(self._settle_sha, list(keys), nargs=1)
            await self.wire.evalsha(call, "".join(parts))


def _least(result: list[int], indexes: tuple[int, ...]) -> int | None:
    values = [result[i + 1] for i in indexes if result[i + 1] >= 0]
    return min(values) if values else None


def _refusal(ledger: Ledger, *, amount: int, retry_ms: int) -> RateLimited | BudgetExceeded:
    if ledger.unit == "budget":
        return BudgetExceeded(
            f"the {ledger.scope} budget is exhausted for this period: this request could cost up to "
            f"${Decimal(amount) / NANO_PER_USD:f}; lower max_tokens or raise the budget",
            retry_after=ledger.retry_after_s or 3600,
        )
    retry = max(1, math.ceil(retry_ms / 1000)) if ledger.kind in ("r", "w") else 1
    return RateLimited(f"rate limit reached: {ledger.name} (limit {ledger.limit})", retry_after=retry)
