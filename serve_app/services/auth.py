"""Accounts, sessions and API keys: register, login, refresh-token rotation, logout, bearer authentication."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from serve_app.errors import EduserveError, ErrorCode
from serve_app.security.passwords import hash_password, password_problems, verify_password
from serve_app.security.principal import Principal
from serve_app.security.principal_cache import Invalidations, PrincipalCache
from serve_app.security.tokens import (
    TokenService,
    hash_secret,
    new_api_key,
    new_secret,
    parse_api_key,
    same_hash,
    unauthorized,
)
from serve_app.settings import AuthSettings
from serve_app.storage.cache import TieredCache
from serve_app.storage.db import Database

logger = logging.getLogger("ray.serve.eduserve.auth")

USER_COLUMNS = "id::text AS id, email, role, display_name, created_at"


async def insert_user(conn: asyncpg.Connection, email: str, password_hash: str, role: str,
                      display_name: str | None) -> dict:
    try:
        row = await conn.fetchrow(
            f"INSERT INTO users (email, password_hash, role, display_name) VALUES ($1, $2, $3, $4)"
            f" RETURNING {USER_COLUMNS}",
            email.strip(), password_hash, role, display_name,
        )
    except asyncpg.UniqueViolationError:
        raise EduserveError(ErrorCode.CONFLICT, "this email cannot be registered") from None
    return dict(row)


async def insert_api_key(conn: asyncpg.Connection, owner_id: str, name: str, role: str,
                         expires_in_days: int | None = None, rate_limit: str | None = None) -> dict[str, Any]:
    """Store a new key (hashed) and return its record with the secret, which is never stored."""
    key, prefix = new_api_key()
    expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    row = await conn.fetchrow(
        "INSERT INTO api_keys (user_id, name, prefix, key_hash, role, expires_at, rate_limit)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id::text AS id, name, prefix, role,"
        " user_id::text AS user_id, created_at, expires_at, rate_limit",
        uuid.UUID(owner_id), name, prefix, hash_secret(key), role, expires, rate_limit,
    )
    return {**dict(row), "key": key}


class AuthService:
    def __init__(self, db: Database, tokens: TokenService, denylist: TieredCache, settings: AuthSettings,
                 invalidations: Invalidations | None = None):
        self.db = db
        self.tokens = tokens
        self.denylist = denylist
        self.settings = settings
        self.principals = invalidations.cache if invalidations else PrincipalCache(0)
        self.invalidations = invalidations

    async def _forget(self, user_id: str | None = None, credential_id: str | None = None) -> None:
        """After a durable revocation: no replica may keep answering from its cache of authenticated callers."""
        if self.invalidations is not None:
            await self.invalidations.announce(user_id, credential_id)

    # ------------------------------------------------------------------ accounts

    async def register(self, email: str, password: str, display_name: str | None, role: str = "student") -> dict:
        problems = password_problems(password, email, self.settings.password_min_length)
        if problems:
            raise EduserveError(ErrorCode.VALIDATION_ERROR, "password: " + "; ".join(problems))
        password_hash = await asyncio.to_thread(hash_password, password)  # ~0.1 s of argon2: off the loop
        async with self.db.connection() as conn:
            return await insert_user(conn, email, password_hash, role, display_name)

    async def get_user(self, user_id: str) -> dict | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(f"SELECT {USER_COLUMNS} FROM users WHERE id = $1", uuid.UUID(user_id))
        return dict(row) if row else None

    async def delete_user(self, user_id: str) -> None:
        async with self.db.transaction() as conn:  # the account, its usage record and its budget
            await conn.execute("DELETE FROM users WHERE id = $1", uuid.UUID(user_id))
            await conn.execute("DELETE FROM usage_minutes WHERE user_id = $1", uuid.UUID(user_id))
            await conn.execute("DELETE FROM token_budgets WHERE scope = 'user' AND subject_id = $1",
                               uuid.UUID(user_id))
        await self._forget(user_id=user_id)

    # ------------------------------------------------------------------ sessions

    async def login(self, email: str, password: str, user_agent: str | None) -> dict[str, Any]:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT id::text AS id, role, password_hash FROM users WHERE lower(email) = lower($1)", email.strip()
            )
        # Same work and the same answer whether the account is missing or the password is wrong.
        if not await asyncio.to_thread(verify_password, password, row["password_hash"] if row else None):
            raise unauthorized("incorrect email or password")
        return await self._issue(row["id"], row["role"], family_id=None, user_agent=user_agent)

    async def _issue(self, user_id: str, role: str, family_id: uuid.UUID | None, user_agent: str | None,
                     conn: asyncpg.Connection | None = None, previous: uuid.UUID | None = None) -> dict[str, Any]:
        access, claims = self.tokens.issue_access(user_id, role)
        refresh = new_secret()
        expires = datetime.now(UTC) + timedelta(seconds=self.settings.refresh_token_ttl_s)

        async def store(c: asyncpg.Connection) -> None:
            new_id = await c.fetchval(
                "INSERT INTO refresh_tokens (user_id, family_id, token_hash, expires_at, user_agent)"
                " VALUES ($1, $2, $3, $4, $5) RETURNING id",
                uuid.UUID(user_id), family_id or uuid.uuid4(), hash_secret(refresh), expires, user_agent,
            )
            if previous is not None:
                await c.execute("UPDATE refresh_tokens SET replaced_by = $1 WHERE id = $2", new_id, previous)

        if conn is not None:
            await store(conn)
        else:
            async with self.db.connection() as c:
                await store(c)
        return {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": claims.expires_at - int(time.time()),
            "refresh_token": refresh,
            "refresh_expires_in": self.settings.refresh_token_ttl_s,
        }

    async def refresh(self, refresh_token: str, user_agent: str | None) -> dict[str, Any]:
        """Rotate: the presented token is spent and a new one issued in its family. A spent token presented
        again means it was copied: the whole family is revoked and both holders must sign in again."""
        reused = False
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT t.id, t.user_id::text AS user_id, t.family_id, t.expires_at, t.used_at, t.revoked_at, u.role"
                " FROM refresh_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1 FOR UPDATE OF t",
                hash_secret(refresh_token),
            )
            if row is None or row["revoked_at"] is not None or row["expires_at"] <= datetime.now(UTC):
                raise unauthorized("invalid or expired refresh token")
            if row["used_at"] is not None:
                await conn.execute(
                    "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
                    row["family_id"],
                )
                reused = True
            else:
                await conn.execute("UPDATE refresh_tokens SET used_at = now() WHERE id = $1", row["id"])
                return await self._issue(row["user_id"], row["role"], row["family_id"], user_agent, conn, row["id"])
        if reused:  # raised after the commit, so the revocation sticks
            logger.warning("refresh token reuse for user %s: family revoked", row["user_id"])
        raise unauthorized("refresh token already used; all sessions of this sign-in were revoked")

    async def logout(self, principal: Principal, refresh_token: str | None) -> None:
        """Revoke the access token (and the refresh token's family) in PostgreSQL, the durable record, then in
        the cache. With the database down this fails (503) rather than report a sign-out that would not hold."""
        async with self.db.transaction() as conn:
            if principal.kind == "user" and principal.expires_at:
                await conn.execute(
                    "INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES ($1, $2, to_timestamp($3))"
                    " ON CONFLICT (jti) DO NOTHING",
                    principal.credential_id, uuid.UUID(principal.user_id), float(principal.expires_at),
                )
                await conn.execute("DELETE FROM revoked_tokens WHERE expires_at < now() - interval '1 minute'")
            if refresh_token:
                await conn.execute(
                    "UPDATE refresh_tokens SET revoked_at = now() WHERE revoked_at IS NULL AND family_id ="
                    " (SELECT family_id FROM refresh_tokens WHERE token_hash = $1 AND user_id = $2)",
                    hash_secret(refresh_token), uuid.UUID(principal.user_id),
                )
        if principal.kind == "user" and principal.expires_at:
            ttl = max(1, principal.expires_at - int(time.time()))
            await self.denylist.set(principal.credential_id, True, ttl)
        await self._forget(credential_id=principal.credential_id)

    # ------------------------------------------------------------------ API keys

    async def create_api_key(self, owner_id: str, name: str, role: str,
                             expires_in_days: int | None = None, rate_limit: str | None = None) -> dict[str, Any]:
        async with self.db.connection() as conn:
            return await insert_api_key(conn, owner_id, name, role, expires_in_days, rate_limit)

    async def revoke_api_key(self, key_id: str) -> bool:
        async with self.db.connection() as conn:
            result = await conn.execute(
                "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", uuid.UUID(key_id)
            )
        await self._forget(credential_id=key_id)
        return result.endswith("1")

    async def api_key_exists(self, key_id: str) -> bool:
        async with self.db.connection() as conn:
            return bool(await conn.fetchval("SELECT 1 FROM api_keys WHERE id = $1", uuid.UUID(key_id)))

    async def find_user_by_email(self, email: str) -> dict | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(f"SELECT {USER_COLUMNS} FROM users WHERE lower(email) = lower($1)", email)
        return dict(row) if row else None

    # ------------------------------------------------------------------ bearer authentication

    async def authenticate(self, credential: str) -> Principal:
        """The caller behind a bearer credential; answered from the replica's short cache when it is there."""
        cached = self.principals.get(credential)
        if cached is not None:
            return cached
        principal = await self._authenticate(credential)
        self.principals.put(credential, principal)
        return principal

    async def _authenticate(self, credential: str) -> Principal:
        prefix = parse_api_key(credential)
        if prefix is not None:
            return await self._authenticate_api_key(credential, prefix)
        claims = self.tokens.decode_access(credential)
        if await self.denylist.get(claims.token_id):  # the cache: a fast no, never the only record
            raise unauthorized("this token was signed out")
        async with self.db.connection() as conn:  # the database down: 503, never a signed-out token let in
            row = await conn.fetchrow(
                "SELECT role, EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = $2) AS revoked FROM users"
                " WHERE id = $1", uuid.UUID(claims.subject), claims.token_id,
            )
        if row is None:
            raise unauthorized("the account no longer exists")
        if row["revoked"]:
            raise unauthorized("this token was signed out")
        role = row["role"]
        # The role comes from the database, not the token: a demotion applies at once.
        return Principal(claims.subject, role, "user", claims.token_id, claims.expires_at)

    async def _authenticate_api_key(self, key: str, prefix: str) -> Principal:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT id::text AS id, user_id::text AS user_id, role, key_hash, expires_at, revoked_at, last_used_at,"
                " rate_limit FROM api_keys WHERE prefix = $1", prefix,
            )
            if row is None or not same_hash(key, row["key_hash"]) or row["revoked_at"] is not None:
                raise unauthorized("invalid API key")
            if row["expires_at"] is not None and row["expires_at"] <= datetime.now(UTC):
                raise unauthorized("expired API key")
            last = row["last_used_at"]
            if last is None or datetime.now(UTC) - last > timedelta(minutes=1):  # one write a minute, not per call
                await conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", uuid.UUID(row["id"]))
        expires = row["expires_at"].timestamp() if row["expires_at"] is not None else None
        return Principal(row["user_id"], row["role"], "api_key", row["id"], expires, row["rate_limit"])
