"""Logout holds whatever happens to the cache: revocations live in PostgreSQL, Redis only caches them; with the
database unreachable, protected routes fail closed (503), never let a signed-out token in."""

from __future__ import annotations

import uuid

import pytest

from serve_app.bootstrap import create_user
from serve_app.errors import EduserveError, ErrorCode
from serve_app.security.tokens import TokenService
from serve_app.services.auth import AuthService
from serve_app.storage.cache import RedisLink, TieredCache
from serve_app.storage.db import Database
from tests.serve_app.storage.test_cache_and_limits import dead_redis_url

PASSWORD = "Long-enough-pass-77"


@pytest.fixture
async def signed_in(stores):
    """A user's login through an AuthService on the real stores, and a factory of further AuthServices (each with a
    fresh in-process cache, as another replica or a restarted one has) on any Redis and database URLs."""
    settings = stores.settings()
    email = f"revoke-{uuid.uuid4().hex[:8]}@school.test"
    await create_user(settings, email, PASSWORD, "student")
    tokens = TokenService(settings.auth, "test-secret-for-revocation")
    opened: list[tuple[Database, RedisLink]] = []

    async def service(redis_url: str = stores.redis_url, database_url: str = stores.database_url) -> AuthService:
        db, redis = Database(database_url, settings.storage), RedisLink(redis_url, settings.storage)
        opened.append((db, redis))
        await db.open()
        return AuthService(db, tokens, TieredCache(redis, settings.storage, "revoked-jti"), settings.auth)

    first = await service()
    login = await first.login(email, PASSWORD, "pytest")
    yield first, login, service
    for db, redis in opened:
        await db.close()
        await redis.close()


async def test_a_signed_out_token_stays_out_when_redis_is_down_or_wiped(signed_in, stores):
    auth, login, service = signed_in
    principal = await auth.authenticate(login["access_token"])
    await auth.logout(principal, login["refresh_token"])

    for other in (await service(redis_url=dead_redis_url()), await service()):  # Redis down; Redis without the entry
        await other.denylist.delete(principal.credential_id)  # a wiped (restarted, unpersisted) cache
        with pytest.raises(EduserveError) as refused:
            await other.authenticate(login["access_token"])
        assert refused.value.code is ErrorCode.UNAUTHORIZED
    with pytest.raises(EduserveError):
        await auth.refresh(login["refresh_token"], "pytest")


async def test_with_the_database_unreachable_a_token_is_refused_not_trusted(signed_in):
    auth, login, service = signed_in
    unreachable = await service(database_url="postgresql://eduserve@127.0.0.1:9/eduserve")
    with pytest.raises(EduserveError) as refused:
        await unreachable.authenticate(login["access_token"])
    assert refused.value.code is ErrorCode.DATABASE_UNAVAILABLE  # 503 + Retry-After: fail closed


async def test_a_logout_that_cannot_be_recorded_is_not_reported_as_done(signed_in):
    auth, login, service = signed_in
    principal = await auth.authenticate(login["access_token"])
    unreachable = await service(database_url="postgresql://eduserve@127.0.0.1:9/eduserve")
    with pytest.raises(EduserveError) as refused:
        await unreachable.logout(principal, login["refresh_token"])
    assert refused.value.code is ErrorCode.DATABASE_UNAVAILABLE
    assert (await auth.authenticate(login["access_token"])).user_id == principal.user_id  # still signed in
