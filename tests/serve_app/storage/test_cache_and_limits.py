"""The two-level cache and the rate limiter on real Redis, and how both degrade when Redis is unreachable."""

from __future__ import annotations

import asyncio
import socket

import pytest

from serve_app.errors import EduserveError, ErrorCode
from serve_app.security.ratelimit import RateLimiter, parse_limit
from serve_app.settings import StorageSettings
from serve_app.storage.cache import RedisLink, TieredCache


def dead_redis_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"  # nothing listens there


SETTINGS = StorageSettings(l1_ttl_s=30, redis_retry_after_s=30, redis_timeout_s=0.3)


async def test_values_go_through_l1_and_redis(stores):
    redis = RedisLink(stores.redis_url, SETTINGS)
    writer, reader = TieredCache(redis, SETTINGS, "t1"), TieredCache(redis, SETTINGS, "t1")
    try:
        await writer.set("k", {"answer": 42}, ttl_s=60)
        assert writer.l1 and await writer.get("k") == {"answer": 42}
        assert not reader.l1  # another replica: nothing in its L1 yet...
        assert await reader.get("k") == {"answer": 42}  # ...so it reads Redis
        assert await redis.client.pttl("eduserve:cache:k") == -2  # namespaced: not under another prefix
        assert 0 < await redis.client.pttl("eduserve:t1:k") <= 60_000
        await writer.delete("k")
        assert await writer.get("k") is None
    finally:
        await redis.close()


async def test_ttl_expires_in_both_levels(stores):
    redis = RedisLink(stores.redis_url, SETTINGS)
    cache = TieredCache(redis, SETTINGS, "t2")
    try:
        await cache.set("short", "v", ttl_s=0.3)
        assert await cache.get("short") == "v"
        await asyncio.sleep(0.5)
        assert await cache.get("short") is None
    finally:
        await redis.close()


async def test_redis_down_means_misses_and_a_degraded_report_not_errors():
    redis = RedisLink(dead_redis_url(), SETTINGS)
    cache = TieredCache(redis, SETTINGS, "t3")
    try:
        await cache.set("k", "v", ttl_s=60)  # no exception
        assert not redis.available and redis.last_error
        assert await cache.get("k") == "v"  # still served from L1 on this replica
        assert await cache.get("other") is None
        assert await redis.check() == {"ok": True, "degraded": True, "error": redis.last_error}
    finally:
        await redis.close()


async def test_rate_limits_are_shared_through_redis(stores):
    redis = RedisLink(stores.redis_url, SETTINGS)
    first, second = RateLimiter(redis), RateLimiter(redis)  # two replicas
    key = f"shared-{id(first)}"
    try:
        for limiter in (first, second, first):
            await limiter.check("3/minute", key)
        with pytest.raises(EduserveError) as error:
            await second.check("3/minute", key)
        assert error.value.code is ErrorCode.RATE_LIMITED
        assert 1 <= int(error.value.headers["Retry-After"]) <= 60
    finally:
        await redis.close()


async def test_rate_limits_fall_back_to_the_replica_when_redis_is_down():
    redis = RedisLink(dead_redis_url(), SETTINGS)
    limiter = RateLimiter(redis)
    try:
        await limiter.check("2/minute", "k")
        await limiter.check("2/minute", "k")
        with pytest.raises(EduserveError) as error:
            await limiter.check("2/minute", "k")
        assert error.value.code is ErrorCode.RATE_LIMITED
        assert not redis.available
    finally:
        await redis.close()


async def outcomes(limiter: RateLimiter, limit: str, key: str, count: int) -> list[bool]:
    async def one() -> bool:
        try:
            await limiter.check(limit, key)
            return True
        except EduserveError as error:
            assert error.code is ErrorCode.RATE_LIMITED and int(error.headers["Retry-After"]) >= 1
            return False

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def test_concurrent_hits_share_redis_calls_and_count_each_hit(stores):
    redis = RedisLink(stores.redis_url, SETTINGS)
    limiter = RateLimiter(redis)
    key = f"merged-{id(limiter)}"
    try:
        assert await outcomes(limiter, "1000/minute", key, 60) == [True] * 60
        assert limiter._merged_hits.calls < 60  # one Redis call carried many hits...
        stats = await limiter.shared.get_window_stats(parse_limit("1000/minute"), key)
        assert stats.remaining == 1000 - 60  # ...and each hit is counted
        assert not limiter._merged_hits._lanes  # a key's lane goes with its last call: keys may be many
    finally:
        await redis.close()


async def test_merged_hits_admit_exactly_what_the_limit_allows_across_replicas(stores):
    redis = RedisLink(stores.redis_url, SETTINGS)
    first, second = RateLimiter(redis), RateLimiter(redis)
    key = f"exact-{id(first)}"
    try:
        results = await asyncio.gather(outcomes(first, "25/minute", key, 20), outcomes(second, "25/minute", key, 20))
        admitted = sum(sum(result) for result in results)
        assert admitted == 25
        assert await outcomes(first, "25/minute", key, 3) == [False] * 3
    finally:
        await redis.close()


async def test_hits_queued_behind_a_hung_redis_call_do_not_wait_it_out_again():
    """Redis accepts but never answers: the first merged call waits out the socket timeout (1 s); the hits queued
    behind it go to the local window at once, not through a second timeout."""
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    redis = RedisLink(f"redis://127.0.0.1:{port}/0", SETTINGS.model_copy(update={"redis_timeout_s": 1.0}))
    limiter = RateLimiter(redis)
    redis.mark_up()  # its first metric import (~0.8 s outside Ray) before the clock starts
    try:
        started = asyncio.get_running_loop().time()
        assert await outcomes(limiter, "100/minute", "hung", 10) == [True] * 10
        assert asyncio.get_running_loop().time() - started < 1.6  # one timeout, not two
        assert not redis.available
    finally:
        await redis.close()
        server.close()
