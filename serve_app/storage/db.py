"""PostgreSQL through an asyncpg pool (pgvector types registered on every connection).

The pool is created lazily and again after failures: a database that is down at start or goes away later
gives 503 + Retry-After on the routes that need it, and the service recovers by itself when it returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from pgvector.asyncpg import register_vector

from serve_app import metrics
from serve_app.errors import EduserveError, ErrorCode
from serve_app.settings import StorageSettings
from serve_app.storage.migrations import migrate

logger = logging.getLogger("ray.serve.eduserve.storage")

CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


# A value the database cannot take: the caller's input (a NUL in text, a number past bigint, text where a number
# is due); asyncpg raises the client-side kind (an InterfaceError!) before sending, PostgreSQL the class-22 kind.
INVALID_VALUE_ERRORS = (asyncpg.exceptions._base.DataError, asyncpg.DataError)


def invalid_value(exc: Exception) -> EduserveError:
    """400 for a value the database refused. Never the value itself in the message (it may be anything)."""
    if isinstance(exc, asyncpg.CharacterNotInRepertoireError | asyncpg.UntranslatableCharacterError):
        reason = "text must not contain NUL characters (\\u0000)"
    elif isinstance(exc, asyncpg.NumericValueOutOfRangeError) or "out of" in str(exc) and "range" in str(exc):
        reason = "a number is out of range"
    else:
        reason = "a value has the wrong form"
    logger.info("database refused a value: %s", type(exc).__name__)
    return EduserveError(ErrorCode.BAD_REQUEST, f"invalid request: {reason}")


def unavailable() -> EduserveError:
    return EduserveError(ErrorCode.DATABASE_UNAVAILABLE, "the database is unavailable; retry shortly",
                         {"Retry-After": "5"})


class Database:
    def __init__(self, url: str, settings: StorageSettings):
        self.url = url
        self.settings = settings
        self.pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._last_attempt = 0.0
        self.last_error: str | None = None

    async def _init_connection(self, conn: asyncpg.Connection) -> None:
        await register_vector(conn)

    async def open(self) -> bool:
        """Create the pool and run migrations; False (and the error kept) when the server is unreachable."""
        async with self._opening:
            if self.pool is not None:
                return True
            self._last_attempt = time.monotonic()
            try:
                # Migrations first, on a plain connection: the pool's init needs the vector type to exist.
                conn = await asyncpg.connect(self.url, timeout=self.settings.connect_timeout_s)
                try:
                    applied = await migrate(conn, {"embedding_dimensions": self.settings.embedding_dimensions})
                finally:
                    await conn.close()
                if applied:
                    logger.info("database migrated: %s", ", ".join(applied))
                self.pool = await asyncpg.create_pool(
                    self.url,
                    min_size=self.settings.pool_min_size,
                    max_size=self.settings.pool_max_size,
                    timeout=self.settings.connect_timeout_s,
                    command_timeout=self.settings.command_timeout_s,
                    init=self._init_connection,
                )
            except CONNECTION_ERRORS as exc:
                self._failed(exc, "database unavailable")
                return False
            self._answered()
            return True

    def _failed(self, exc: BaseException, what: str) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        logger.warning("%s: %s", what, self.last_error)
        metrics.set_dependency_up("postgres", False)

    def _answered(self) -> None:
        self.last_error = None
        metrics.set_dependency_up("postgres", True)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; connection failures anywhere inside become 503 + Retry-After."""
        if self.pool is None:
            recently = time.monotonic() - self._last_attempt < self.settings.reconnect_interval_s
            if recently or not await self.open():
                raise unavailable()
        assert self.pool is not None
        try:
            async with self.pool.acquire(timeout=self.settings.connect_timeout_s) as conn:
                if self.last_error is not None:  # back after a failure
                    self._answered()
                yield conn
        except INVALID_VALUE_ERRORS as exc:  # before CONNECTION_ERRORS: the client-side kind is an InterfaceError
            raise invalid_value(exc) from None
        except CONNECTION_ERRORS as exc:
            self._failed(exc, "database connection failed")
            raise unavailable() from None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def check(self) -> dict[str, Any]:
        try:
            async with self.connection() as conn:
                await conn.fetchval("SELECT 1")
            return {"ok": True}
        except EduserveError:
            return {"ok": False, "error": self.last_error or "unavailable"}

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
