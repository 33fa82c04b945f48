"""Token budgets (prompt + completion tokens per minute, day and month; UTC calendar periods): per API key, per
user, and per course collection, where the course's budget (set by its teacher) caps each enrolled student.

Counted in Redis, one counter per (user or key, period), shared by every ingress replica. A counter Redis does
not have (a new period, a restarted Redis) is seeded from the usage in PostgreSQL, the durable record; while
Redis is down, a replica counts from PostgreSQL plus what it has not written yet (the same rule as rate limits:
the service stays up, a little looser). The request that crosses a budget completes; the next gets a 429 that
names the budget. Far from its budget (under half of it) a caller is checked against a counter read from Redis
within the last second plus what this replica counted since: no Redis round trip per request for a busy caller.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cachetools import TTLCache

from serve_app import metrics
from serve_app.errors import EduserveError, ErrorCode
from serve_app.services.usage import Caller, UsageMeter
from serve_app.settings import UsageSettings
from serve_app.storage.cache import RedisLink
from serve_app.storage.db import Database

logger = logging.getLogger("ray.serve.eduserve.budgets")

PERIODS = ("minute", "day", "month")
ADJECTIVE = {"minute": "per-minute", "day": "daily", "month": "monthly"}
REUSE_S = 1.0  # a counter read from Redis is reused this long ...
REUSE_BELOW = 0.5  # ... while it is below this fraction of its smallest budget
# INCRBY only where the counter exists: one Redis lost is seeded again from PostgreSQL, never restarted from 0.
ADD_IF_COUNTED = """
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, ARGV[i]) end
end
return 0
"""
LIMITS_QUERY = """
SELECT b.scope, b.per_minute, b.per_day, b.per_month, c.name AS collection
FROM token_budgets b LEFT JOIN collections c ON b.scope = 'collection' AND c.id = b.subject_id
WHERE (b.scope = 'user' AND b.subject_id = $1) OR (b.scope = 'api_key' AND b.subject_id = $2)
   OR (b.scope = 'collection' AND $3 AND b.subject_id IN (SELECT collection_id FROM collection_members
                                                          WHERE user_id = $1))
"""


@dataclass(frozen=True)
class Limit:
    counter: str  # whose usage it caps: "user" (all of the user's) or "key" (through this API key)
    period: str
    tokens: int
    owner: str  # for the message: "your", "this API key's", "course 'Algebra'"

    def describe(self) -> str:
        return f"{self.owner} {ADJECTIVE[self.period]} token budget ({self.tokens} tokens)"


def window(period: str, now: float) -> tuple[str, float, float]:
    """The current period's (bucket name, start, end), epoch seconds, UTC."""
    if period == "minute":
        start = now // 60 * 60
        return str(int(start)), start, start + 60
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return today.strftime("%Y%m%d"), today.timestamp(), today.timestamp() + 86_400
    first = today.replace(day=1)
    following = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
    return first.strftime("%Y%m"), first.timestamp(), following.timestamp()


def limits_from(rows: list[dict[str, Any]]) -> list[Limit]:
    limits = []
    for row in rows:
        counter = "key" if row["scope"] == "api_key" else "user"
        owner = {"api_key": "this API key's", "user": "your"}.get(row["scope"]) or f"course {row['collection']!r}"
        limits += [Limit(counter, period, row[f"per_{period}"], owner) for period in PERIODS if row[f"per_{period}"]]
    return limits


class BudgetService:
    def __init__(self, db: Database, redis: RedisLink, meter: UsageMeter, settings: UsageSettings):
        self.db = db
        self.redis = redis
        self.meter = meter
        self.settings = settings
        self._limits: TTLCache = TTLCache(maxsize=10_000, ttl=settings.budget_cache_ttl_s or 1e-9)
        self._add = redis.client.register_script(ADD_IF_COUNTED)
        self._pending: dict[str, int] = {}  # counter key → tokens counted here, not yet added in Redis
        # counter key → [value read from Redis, when, tokens this replica counted since (or pending then)]
        self._reads: TTLCache = TTLCache(maxsize=100_000, ttl=REUSE_S)
        self._pushing: asyncio.Task | None = None

    # ------------------------------------------------------------------ the hot path

    async def admit(self, caller: Caller) -> None:
        caller.limits = await self._limits_of(caller) if self.settings.budgets_enabled else []
        if not caller.limits:
            return
        now = time.time()
        used = await self._used(caller, now)
        over = [limit for limit in caller.limits if used[(limit.counter, limit.period)] >= limit.tokens]
        if over:
            binding = max(over, key=lambda limit: window(limit.period, now)[2])  # the one that lasts longest
            retry_after = max(1, math.ceil(window(binding.period, now)[2] - now))
            metrics.record_rate_limited(f"token_budget_{binding.period}")
            raise EduserveError(
                ErrorCode.BUDGET_EXCEEDED,
                f"{binding.describe()} is used up; retry in {retry_after}s", {"Retry-After": str(retry_after)})

    def charge(self, caller: Caller, tokens: int) -> None:
        """Add `tokens` to the caller's counters (only where a budget applies; no Redis call for others)."""
        if not caller.limits:
            return
        now = time.time()
        for counter, period in {(limit.counter, limit.period) for limit in caller.limits}:
            key = self._key(caller, counter, period, now)
            self._pending[key] = self._pending.get(key, 0) + tokens
            read = self._reads.get(key)
            if read is not None:
                read[2] += tokens
        if self._pushing is None or self._pushing.done():
            self._pushing = asyncio.create_task(self._push(), name="budget-push")

    async def _push(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            keys, amounts = list(batch), list(batch.values())

            async def add(client: Any, keys: list[str] = keys, amounts: list[int] = amounts) -> int:
                return await self._add(keys=keys, args=amounts, client=client)

            if await self.redis.run(add, None) is None:
                return  # Redis down: its counters are seeded again from PostgreSQL when it is back

    def _key(self, caller: Caller, counter: str, period: str, now: float) -> str:
        subject = caller.api_key if counter == "key" else caller.user_id
        return f"eduserve:budget:{counter}:{subject}:{period}:{window(period, now)[0]}"

    async def _used(self, caller: Caller, now: float) -> dict[tuple[str, str], int]:
        """Tokens used per (counter, period) the caller's budgets name. A counter read from Redis less than
        REUSE_S ago, plus what this replica counted since, answers without a round trip while it is below half
        of its smallest budget; nearer the budget every check reads Redis, so what other replicas counted
        decides the crossing."""
        smallest: dict[tuple[str, str], int] = {}
        for limit in caller.limits or []:
            which = (limit.counter, limit.period)
            smallest[which] = min(smallest.get(which, limit.tokens), limit.tokens)
        used: dict[tuple[str, str], int] = {}
        stale: list[tuple[tuple[str, str], str]] = []
        for which, tokens in sorted(smallest.items()):
            key = self._key(caller, *which, now)
            read = self._reads.get(key)
            if read is not None and now - read[1] < REUSE_S and read[0] + read[2] < tokens * REUSE_BELOW:
                used[which] = read[0] + read[2]
            else:
                stale.append((which, key))
        if stale:
            used |= await self._read(caller, stale, now)
        return used

    async def _read(self, caller: Caller, stale: list[tuple[tuple[str, str], str]],
                    now: float) -> dict[tuple[str, str], int]:
        keys = [key for _, key in stale]
        values = await self.redis.run(lambda client: client.mget(keys), None)
        used: dict[tuple[str, str], int] = {}
        for ((counter, period), key), value in zip(stale, values or [None] * len(keys), strict=True):
            start = window(period, now)[1]
            if values is None:  # Redis down: what PostgreSQL has, plus what this replica has not written yet
                api_key = caller.api_key if counter == "key" else None
                stored = await self._stored(caller, counter, start)
                used[(counter, period)] = stored + self.meter.unwritten_tokens(caller.user_id, api_key, start)
                continue
            if value is None:
                value = await self._seed(key, await self._stored(caller, counter, start),
                                         window(period, now)[2] + 60 - now)
            # Counted here but not yet added in Redis: not in the value read, so counted on top of it.
            self._reads[key] = [int(value), now, self._pending.get(key, 0)]
            used[(counter, period)] = int(value) + self._pending.get(key, 0)
        return used

    async def _seed(self, key: str, stored: int, ttl_s: float) -> int:
        async def seed(client: Any) -> Any:
            async with client.pipeline(transaction=False) as pipe:
                return await pipe.set(key, stored, nx=True, ex=max(1, int(ttl_s))).get(key).execute()

        result = await self.redis.run(seed, None)
        return int(result[1]) if result and result[1] is not None else stored

    async def _stored(self, caller: Caller, counter: str, since: float) -> int:
        query = ("SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage_minutes"
                 " WHERE user_id = $1 AND minute >= to_timestamp($2)")
        args: list[Any] = [uuid.UUID(caller.user_id), since]
        if counter == "key":
            query += " AND api_key = $3"
            args.append(caller.api_key)
        try:
            async with self.db.connection() as conn:
                return int(await conn.fetchval(query, *args))
        except EduserveError:  # the database down as well: what this replica counted, no more
            return 0

    async def _limits_of(self, caller: Caller) -> list[Limit]:
        cache_key = (caller.user_id, caller.api_key, caller.role)
        cached = self._limits.get(cache_key)
        if cached is not None:
            return cached
        try:
            async with self.db.connection() as conn:
                rows = await conn.fetch(LIMITS_QUERY, uuid.UUID(caller.user_id),
                                        uuid.UUID(caller.api_key) if caller.api_key else None,
                                        caller.role == "student")
        except EduserveError:
            logger.warning("budgets of %s unknown (database unavailable): not enforced on this request",
                           caller.user_id)
            return []
        limits = limits_from([dict(row) for row in rows])
        self._limits[cache_key] = limits
        return limits

    # ------------------------------------------------------------------ management

    async def get(self, scope: str, subject_id: str) -> dict[str, Any] | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT per_minute, per_day, per_month, updated_at FROM token_budgets WHERE scope = $1"
                " AND subject_id = $2", scope, uuid.UUID(subject_id))
        return _shape(scope, subject_id, dict(row)) if row else None

    async def put(self, scope: str, subject_id: str, budget: dict[str, int | None], set_by: str) -> dict[str, Any]:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "INSERT INTO token_budgets (scope, subject_id, per_minute, per_day, per_month, set_by)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, subject_id) DO UPDATE SET"
                " per_minute = EXCLUDED.per_minute, per_day = EXCLUDED.per_day, per_month = EXCLUDED.per_month,"
                " set_by = EXCLUDED.set_by, updated_at = now() RETURNING per_minute, per_day, per_month, updated_at",
                scope, uuid.UUID(subject_id), budget.get("tokens_per_minute"), budget.get("tokens_per_day"),
                budget.get("tokens_per_month"), uuid.UUID(set_by))
        self._limits.clear()  # here at once; other replicas within usage.budget_cache_ttl_s
        return _shape(scope, subject_id, dict(row))

    async def delete(self, scope: str, subject_id: str) -> bool:
        async with self.db.connection() as conn:
            result = await conn.execute("DELETE FROM token_budgets WHERE scope = $1 AND subject_id = $2",
                                        scope, uuid.UUID(subject_id))
        self._limits.clear()
        return result.endswith("1")


def _shape(scope: str, subject_id: str, row: dict[str, Any]) -> dict[str, Any]:
    return {"scope": scope, "subject_id": subject_id, "tokens_per_minute": row["per_minute"],
            "tokens_per_day": row["per_day"], "tokens_per_month": row["per_month"], "updated_at": row["updated_at"]}
