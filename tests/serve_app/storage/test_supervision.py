"""Embedded stores under faults: killed servers come back on the same address, and the clients reconnect by
themselves. Each test runs its own embedded servers (a data directory of its own), never the session's."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve_app.settings import StorageSettings
from serve_app.storage.cache import RedisLink
from serve_app.storage.db import Database
from serve_app.storage.embedded import EmbeddedPostgres, EmbeddedRedis, StoreSupervisor
from tests.support.faults import kill_embedded_postgres, kill_embedded_redis
from tests.support.wait import wait_for_async


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="eduserve-supervised-"))  # not under pytest's 0700 basetemp (see conftest)
    try:
        yield path
    finally:
        EmbeddedRedis(path).stop()
        EmbeddedPostgres(path).stop()
        shutil.rmtree(path, ignore_errors=True)


async def test_a_restarted_redis_is_used_again_at_once_despite_stale_pooled_connections(data_dir):
    redis = EmbeddedRedis(data_dir)
    url = redis.start()
    link = RedisLink(url, StorageSettings(redis_retry_after_s=0.2))
    try:
        # Several pooled connections, all of which the restart below leaves dead.
        assert await asyncio.gather(*(link.run(lambda r: r.ping(), False) for _ in range(8))) == [True] * 8
        kill_embedded_redis(data_dir)
        assert not redis.alive()
        assert redis.restart() == url  # the same address: clients keep their URL
        results = await asyncio.gather(*(link.run(lambda r: r.set("k", "v"), None) for _ in range(8)))
        assert results == [True] * 8
        assert link.available and link.last_error is None
    finally:
        await link.close()


def test_redis_comes_back_on_its_saved_port_after_a_clean_stop(data_dir):
    redis = EmbeddedRedis(data_dir)
    url = redis.start()
    redis.stop()
    assert redis.start() == url


async def test_the_supervisor_restarts_killed_stores_and_the_clients_reconnect(data_dir):
    postgres, redis = EmbeddedPostgres(data_dir), EmbeddedRedis(data_dir)
    database_url, redis_url = postgres.start(), redis.start()
    settings = StorageSettings(redis_retry_after_s=0.2, reconnect_interval_s=0.2)
    db, link = Database(database_url, settings), RedisLink(redis_url, settings)
    supervisor = StoreSupervisor([postgres, redis], interval_s=0.2)
    try:
        assert await db.open()
        async with db.connection() as conn:
            await conn.execute("CREATE TABLE notes (body text)")
            await conn.execute("INSERT INTO notes VALUES ('kept')")
        await link.run(lambda r: r.set("k", "v"), None)

        supervisor.start()
        kill_embedded_redis(data_dir)
        kill_embedded_postgres(data_dir)

        async def both_answer() -> bool:
            try:
                async with db.connection() as conn:
                    rows = await conn.fetchval("SELECT count(*) FROM notes")
            except Exception:  # noqa: BLE001 - 503 until it is back
                return False
            return rows == 1 and await link.run(lambda r: r.ping(), False)

        await wait_for_async(both_answer, timeout_s=60, what="both stores back")

        async def counted() -> bool:  # restart() returns once it has also checked the database: a moment later
            return sum(supervisor.restarts.values()) >= 2

        await wait_for_async(counted, timeout_s=30, what="both restarts counted")
        assert supervisor.restarts == {"postgres": 1, "redis": 1}
        assert postgres.start() == database_url and redis.start() == redis_url
        # Nothing is left marking a store down once it answers again.
        assert (await db.check())["ok"] and not (await link.check())["degraded"]
    finally:
        supervisor.stop()
        await db.close()
        await link.close()


def test_a_store_that_cannot_be_restarted_is_retried_not_given_up(data_dir, monkeypatch):
    redis = EmbeddedRedis(data_dir)
    redis.start()
    supervisor = StoreSupervisor([redis], interval_s=0.1)
    kill_embedded_redis(data_dir)
    failing = [True]

    def restart_fails_once() -> str:
        if failing.pop() if failing else False:
            raise RuntimeError("port taken")
        return EmbeddedRedis.restart(redis)

    monkeypatch.setattr(redis, "restart", restart_fails_once)
    assert supervisor.check() == []  # the failure is logged, the loop goes on
    assert supervisor.check() == ["redis"]
    assert redis.alive()
