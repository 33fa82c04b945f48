"""The ingress's short cache of authenticated callers: it spares the database a lookup per request, yet a logout, a
revoked API key or a deleted account reaches every replica at once through Redis, and within the cache's TTL when
Redis is down. Two AuthServices on the same stores stand for two ingress replicas."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from serve_app.bootstrap import create_user
from serve_app.errors import EduserveError, ErrorCode
from serve_app.security.principal import Principal
from serve_app.security.principal_cache import Invalidations, PrincipalCache
from serve_app.security.tokens import TokenService
from serve_app.services.auth import AuthService
from serve_app.storage.cache import RedisLink, TieredCache
from serve_app.storage.db import Database
from tests.serve_app.storage.test_cache_and_limits import dead_redis_url

PASSWORD = "Long-enough-pass-77"


@pytest.fixture
async def replicas(stores):
    """(make_replica, email): each replica an AuthService with its own principal cache and invalidation listener."""
    settings = stores.settings()
    email = f"cache-{uuid.uuid4().hex[:8]}@school.test"
    await create_user(settings, email, PASSWORD, "student")
    tokens = TokenService(settings.auth, "test-secret-for-principal-cache")
    opened: list[tuple[Database, RedisLink, Invalidations]] = []

    async def replica(ttl_s: float, redis_url: str = stores.redis_url) -> AuthService:
        db, redis = Database(stores.database_url, settings.storage), RedisLink(redis_url, settings.storage)
        invalidations = Invalidations(redis, PrincipalCache(ttl_s), reconnect_s=0.2)
        opened.append((db, redis, invalidations))
        await db.open()
        invalidations.start()
        if redis_url == stores.redis_url:
            await asyncio.wait_for(invalidations.subscribed.wait(), 10)
        return AuthService(db, tokens, TieredCache(redis, settings.storage, "revoked-jti"), settings.auth,
                           invalidations)

    yield replica, email
    for db, redis, invalidations in opened:
        await invalidations.stop()
        await db.close()
        await redis.close()


async def refused_within(auth: AuthService, credential: str, seconds: float) -> float:
    """Seconds until `auth` refuses `credential` (401); fails the test past `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            await auth.authenticate(credential)
        except EduserveError as exc:
            assert exc.code is ErrorCode.UNAUTHORIZED
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    pytest.fail(f"still accepted after {seconds}s")


async def test_a_cached_caller_skips_the_database_until_the_ttl_ends(replicas):
    replica, email = replicas
    auth = await replica(ttl_s=1.0)
    login = await auth.login(email, PASSWORD, "pytest")
    first = await auth.authenticate(login["access_token"])
    await auth.db.close()  # a cache hit needs no database ...
    assert await auth.authenticate(login["access_token"]) == first
    await asyncio.sleep(1.1)  # ... and once the entry expired, the database is asked again: down means 503
    with pytest.raises(EduserveError) as refused:
        await auth.authenticate(login["access_token"])
    assert refused.value.code is ErrorCode.DATABASE_UNAVAILABLE


async def test_logout_revoked_key_and_deleted_account_reach_the_other_replica_at_once(replicas):
    replica, email = replicas
    a, b = await replica(ttl_s=60), await replica(ttl_s=60)  # a TTL far longer than the test: Redis must do it

    login = await a.login(email, PASSWORD, "pytest")
    principal = await b.authenticate(login["access_token"])  # cached on b
    await asyncio.sleep(1.5)  # an idle channel outlives the Redis client's 0.5 s socket timeout
    assert b.invalidations.subscribed.is_set()
    await a.logout(await a.authenticate(login["access_token"]), login["refresh_token"])
    assert await refused_within(b, login["access_token"], 5) < 2

    key = await a.create_api_key(principal.user_id, "service", "student", rate_limit="20000/minute")
    cached = await b.authenticate(key["key"])
    assert cached.kind == "api_key" and cached.rate_limit == "20000/minute"
    assert await a.revoke_api_key(key["id"])
    assert await refused_within(b, key["key"], 5) < 2

    second = await a.login(email, PASSWORD, "pytest")
    await b.authenticate(second["access_token"])
    await a.delete_user(principal.user_id)
    assert await refused_within(b, second["access_token"], 5) < 2


async def test_with_redis_down_a_logout_elsewhere_holds_within_the_ttl(replicas):
    replica, email = replicas
    dead = dead_redis_url()
    a, b = await replica(ttl_s=1.0, redis_url=dead), await replica(ttl_s=1.0, redis_url=dead)
    login = await a.login(email, PASSWORD, "pytest")
    await b.authenticate(login["access_token"])
    await a.logout(await a.authenticate(login["access_token"]), None)  # recorded in PostgreSQL only
    with pytest.raises(EduserveError):  # the replica that signed out forgets at once
        await a.authenticate(login["access_token"])
    assert await refused_within(b, login["access_token"], 3) <= 1.2  # the other within its TTL


def test_an_entry_never_outlives_its_credential():
    cache = PrincipalCache(ttl_s=60)
    expired = Principal("u1", "student", "user", "jti-1", time.time() - 1)
    cache.put("token-a", expired)  # already expired: not kept
    assert cache.get("token-a") is None
    soon = Principal("u1", "student", "user", "jti-1", time.time() + 0.2)
    cache.put("token-b", soon)
    assert cache.get("token-b") == soon
    time.sleep(0.3)
    assert cache.get("token-b") is None
    lasting = Principal("u1", "student", "api_key", "jti-1", None)  # a key without expiry: kept for ttl_s
    cache.put("token-c", lasting)
    assert cache.get("token-c") == lasting
    assert "token-c" not in str(list(cache.entries.keys()))  # keys are hashes, never the secret
    assert cache.drop(credential_id="jti-1") == 1 and cache.get("token-c") is None
