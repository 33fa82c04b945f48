"""Usage accounting and token budgets on real PostgreSQL and Redis, without Ray: two replicas' meters add up, a
database outage loses nothing, budgets hold across replicas, when Redis lost its counters and when it is down."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from serve_app.errors import EduserveError, ErrorCode
from serve_app.security.principal import Principal
from serve_app.services import usage
from serve_app.services.auth import insert_user
from serve_app.services.budgets import BudgetService, window
from serve_app.services.usage import Consumed, UsageMeter
from serve_app.services.usage_reports import UsageReports
from serve_app.settings import StorageSettings, UsageSettings
from serve_app.storage.cache import RedisLink
from serve_app.storage.db import Database
from tests.serve_app.storage.test_cache_and_limits import dead_redis_url

STORAGE = StorageSettings(redis_retry_after_s=30, redis_timeout_s=0.3, connect_timeout_s=1, reconnect_interval_s=0.1)
SETTINGS = UsageSettings(flush_interval_s=60)  # flushed by the tests, not by the timer


class Replica:
    """What one ingress replica holds for accounting."""

    def __init__(self, database_url: str, redis_url: str):
        self.db = Database(database_url, STORAGE)
        self.redis = RedisLink(redis_url, STORAGE)
        self.meter = UsageMeter(SETTINGS)
        self.budgets = BudgetService(self.db, self.redis, self.meter, SETTINGS)
        self.meter.db, self.meter.budgets = self.db, self.budgets

    async def call(self, principal: Principal, tokens: int, model: str = "llm-a") -> None:
        """One request: bound to its caller, admitted, then a model call that used `tokens` (20% prompt)."""
        usage.bind(principal)
        await self.meter.admit()
        prompt = tokens // 5
        self.meter.record(model, "chat", Consumed(prompt_tokens=prompt, completion_tokens=tokens - prompt))
        if self.budgets._pushing is not None:
            await self.budgets._pushing

    async def close(self) -> None:
        await self.db.close()
        await self.redis.close()


@pytest.fixture
async def database(fresh_database):
    db = Database(fresh_database, STORAGE)
    assert await db.open()
    yield db
    await db.close()


async def _user(db: Database, role: str = "student") -> str:
    async with db.connection() as conn:
        return (await insert_user(conn, f"{uuid.uuid4().hex[:8]}@school.test", "x", role, None))["id"]


def _key_principal(user_id: str, role: str = "student") -> Principal:
    return Principal(user_id, role, "api_key", str(uuid.uuid4()))


async def test_two_replicas_meters_add_up_in_one_row_per_minute(database, fresh_database, stores):
    user = await _user(database)
    principal = Principal(user, "student", "user", "jti-1")
    a, b = Replica(fresh_database, stores.redis_url), Replica(fresh_database, stores.redis_url)
    try:
        await asyncio.gather(*(replica.call(principal, 10) for replica in (a, b) for _ in range(25)))
        assert await a.meter.flush() and await b.meter.flush()
        async with database.connection() as conn:
            rows = await conn.fetch("SELECT requests, prompt_tokens, completion_tokens FROM usage_minutes"
                                    " WHERE user_id = $1", uuid.UUID(user))
        assert sum(r["requests"] for r in rows) == 50
        assert sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows) == 500
        assert len(rows) <= 2  # aggregated per minute (a minute boundary may fall inside the test)
        report = await UsageReports(database, a.meter).report(None, None, ["model"], "total", user_id=user)
        assert report["totals"]["total_tokens"] == 500 and report["data"][0]["model"] == "llm-a"
    finally:
        await a.close()
        await b.close()


async def test_usage_counted_while_the_database_is_down_is_written_when_it_is_back(database, fresh_database, stores):
    user = await _user(database)
    replica = Replica("postgresql://eduserve@127.0.0.1:9/eduserve", stores.redis_url)  # nothing listens there
    try:
        await replica.call(Principal(user, "student", "user", "jti-2"), 40)
        assert not await replica.meter.flush()  # the database is unreachable: kept
        await replica.call(Principal(user, "student", "user", "jti-2"), 60)
        assert replica.meter.unwritten_tokens(user, None, 0) == 100
        replica.meter.db = database  # back
        assert await replica.meter.flush() and not replica.meter.buffer
        async with database.connection() as conn:
            total = await conn.fetchval("SELECT sum(prompt_tokens + completion_tokens) FROM usage_minutes"
                                        " WHERE user_id = $1", uuid.UUID(user))
        assert total == 100
    finally:
        await replica.close()


async def test_a_key_budget_lets_the_crossing_request_finish_and_refuses_the_next(database, fresh_database, stores):
    user = await _user(database)
    principal = _key_principal(user)
    a, b = Replica(fresh_database, stores.redis_url), Replica(fresh_database, stores.redis_url)
    try:
        await a.budgets.put("api_key", principal.credential_id, {"tokens_per_day": 200}, user)
        await a.call(principal, 150)
        await b.call(principal, 150)  # crosses 200 on the other replica: it completes
        with pytest.raises(EduserveError) as refused:
            await a.call(principal, 10)
        assert refused.value.code is ErrorCode.BUDGET_EXCEEDED and refused.value.code.status == 429
        assert "this API key's daily token budget (200 tokens)" in refused.value.message
        retry_after = int(refused.value.headers["Retry-After"])
        assert 0 < retry_after <= 86_400
        # Another key of the same user is not limited by this key's budget.
        await a.call(_key_principal(user), 10)
    finally:
        await a.close()
        await b.close()


async def test_counters_redis_lost_are_seeded_from_postgresql(database, fresh_database, stores):
    user = await _user(database)
    principal = Principal(user, "student", "user", "jti-3")
    replica = Replica(fresh_database, stores.redis_url)
    try:
        await replica.budgets.put("user", user, {"tokens_per_month": 100}, user)
        await replica.call(principal, 120)
        assert await replica.meter.flush()
        bucket = window("month", time.time())[0]
        await replica.redis.client.delete(f"eduserve:budget:user:{user}:month:{bucket}")  # Redis restarted
        usage.bind(principal)
        with pytest.raises(EduserveError) as refused:
            await replica.meter.admit()
        assert "your monthly token budget (100 tokens)" in refused.value.message
    finally:
        await replica.close()


async def test_with_redis_down_budgets_count_from_postgresql_and_this_replica(database, fresh_database, stores):
    user = await _user(database)
    principal = Principal(user, "student", "user", "jti-4")
    other, alone = Replica(fresh_database, stores.redis_url), Replica(fresh_database, dead_redis_url())
    try:
        await other.budgets.put("user", user, {"tokens_per_minute": 100}, user)
        await other.call(principal, 60)
        assert await other.meter.flush()  # another replica's usage, in PostgreSQL
        await alone.call(principal, 30)  # 60 < 100: admitted; counted here, not written yet
        assert not alone.redis.available
        await alone.call(principal, 30)  # 60 + 30 < 100: admitted, and crosses
        with pytest.raises(EduserveError) as refused:
            await alone.call(principal, 1)  # 60 in PostgreSQL + 60 only this replica knows
        assert refused.value.code is ErrorCode.BUDGET_EXCEEDED
    finally:
        await other.close()
        await alone.close()


async def test_a_course_budget_caps_enrolled_students_only(database, fresh_database, stores):
    teacher, student, outsider = await _user(database, "teacher"), await _user(database), await _user(database)
    async with database.connection() as conn:
        course = await conn.fetchval("INSERT INTO collections (name, kind, owner_id) VALUES ('Algebra', 'course', $1)"
                                     " RETURNING id::text", uuid.UUID(teacher))
        for member in (teacher, student):
            await conn.execute("INSERT INTO collection_members VALUES ($1, $2)", uuid.UUID(course), uuid.UUID(member))
    replica = Replica(fresh_database, stores.redis_url)
    try:
        await replica.budgets.put("collection", course, {"tokens_per_day": 50}, teacher)
        for user, role in ((student, "student"), (teacher, "teacher"), (outsider, "student")):
            await replica.call(Principal(user, role, "user", f"jti-{user}"), 60)
        usage.bind(Principal(student, "student", "user", "jti-s"))
        with pytest.raises(EduserveError) as refused:
            await replica.meter.admit()
        assert "course 'Algebra' daily token budget (50 tokens)" in refused.value.message
        for user, role in ((teacher, "teacher"), (outsider, "student")):
            await replica.call(Principal(user, role, "user", f"jti-{user}"), 60)  # not limited
    finally:
        await replica.close()


def test_windows_are_utc_calendar_periods():
    # 2026-12-31 23:59:30 UTC
    now = 1798761570.0
    assert window("minute", now)[1:] == (1798761540.0, 1798761600.0)
    name, start, end = window("day", now)
    assert name == "20261231" and end - start == 86_400 and end == 1798761600.0
    name, start, end = window("month", now)
    assert name == "202612" and end == 1798761600.0 and end - start == 31 * 86_400
