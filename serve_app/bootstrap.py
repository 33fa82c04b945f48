"""Operator tasks that run outside the service, straight against the database: create users and API keys,
and the demo credentials the run command prints. Used by the `eduserve` CLI and by the tests' fixtures."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from serve_app.errors import EduserveError
from serve_app.security.passwords import hash_password, password_problems
from serve_app.services.auth import insert_api_key, insert_user
from serve_app.settings import Settings
from serve_app.storage.db import Database
from serve_app.storage.embedded import EmbeddedPostgres

DEMO_EMAIL = "demo@eduserve.local"


def database_url(settings: Settings) -> str:
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return EmbeddedPostgres(settings.data_dir).start()


async def _open(settings: Settings) -> Database:
    db = Database(database_url(settings), settings.storage)
    if not await db.open():
        raise RuntimeError(f"cannot reach the database: {db.last_error}")
    return db


async def create_user(settings: Settings, email: str, password: str, role: str,
                      display_name: str | None = None) -> dict[str, Any]:
    problems = password_problems(password, email, settings.auth.password_min_length)
    if problems:
        raise ValueError("password: " + "; ".join(problems))
    db = await _open(settings)
    try:
        async with db.connection() as conn:
            return await insert_user(conn, email, hash_password(password), role, display_name)
    finally:
        await db.close()


async def create_api_key(settings: Settings, email: str, name: str, role: str,
                         expires_in_days: int | None = None, rate_limit: str | None = None) -> dict[str, Any]:
    db = await _open(settings)
    try:
        async with db.connection() as conn:
            owner = await conn.fetchval("SELECT id::text FROM users WHERE lower(email) = lower($1)", email)
            if owner is None:
                raise ValueError(f"no user {email}; create it first (eduserve create-user)")
            return await insert_api_key(conn, owner, name, role, expires_in_days, rate_limit)
    finally:
        await db.close()


async def ensure_demo_credentials(settings: Settings) -> dict[str, str]:
    """A local demo admin and an API key, kept (mode 0600) in data_dir/demo_credentials.json and reused while
    the key still works."""
    path: Path = settings.data_dir / "demo_credentials.json"
    db = await _open(settings)
    try:
        async with db.connection() as conn:
            if path.exists():
                saved = json.loads(path.read_text())
                prefix = saved["api_key"].split("_")[1]
                if await conn.fetchval(
                    "SELECT 1 FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL", prefix
                ):
                    return saved
            password = secrets.token_urlsafe(12)
            user = await conn.fetchrow("SELECT id::text AS id FROM users WHERE lower(email) = $1", DEMO_EMAIL)
            if user is None:
                user = await insert_user(conn, DEMO_EMAIL, hash_password(password), "admin", "Demo admin")
            else:
                await conn.execute("UPDATE users SET password_hash = $1 WHERE id = $2::uuid",
                                   hash_password(password), user["id"])
            key = await insert_api_key(conn, user["id"], "demo", "admin")
    except EduserveError as exc:
        raise RuntimeError(exc.message) from None
    finally:
        await db.close()
    saved = {"email": DEMO_EMAIL, "password": password, "api_key": key["key"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(saved))
    return saved
