"""Chat sessions in PostgreSQL: each user's sessions and their messages, and a session's recent context (owner,
title, the turns sent back to the model) cached in Redis and briefly in L1, written through on every message."""

from __future__ import annotations

import json
import uuid
from typing import Any

from serve_app.errors import EduserveError, ErrorCode
from serve_app.settings import ChatSettings
from serve_app.storage.cache import TieredCache
from serve_app.storage.db import Database

SESSION_COLUMNS = "id::text AS id, title, retrieval, created_at, updated_at"
MESSAGE_COLUMNS = "id::text AS id, role, content, status, token_count, metadata, created_at"
# Turns sent back to the model: finished answers, and the part of interrupted ones the user saw.
HISTORY_STATUSES = ("completed", "interrupted")


def not_found() -> EduserveError:
    return EduserveError(ErrorCode.NOT_FOUND, "no such chat session")


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise not_found() from None


def _message(row: Any) -> dict[str, Any]:
    message = dict(row)
    if isinstance(message.get("metadata"), str):
        message["metadata"] = json.loads(message["metadata"])
    return message


class ChatStore:
    def __init__(self, db: Database, cache: TieredCache, settings: ChatSettings):
        self.db = db
        self.cache = cache
        self.settings = settings

    async def create(self, user_id: str, title: str, retrieval: bool) -> dict[str, Any]:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                f"INSERT INTO chat_sessions (user_id, title, retrieval) VALUES ($1, $2, $3) RETURNING {SESSION_COLUMNS}",
                uuid.UUID(user_id), title, retrieval,
            )
        return dict(row)

    async def list(self, user_id: str, limit: int, before: str | None) -> dict[str, Any]:
        async with self.db.connection() as conn:
            cursor = None
            if before:
                cursor = await conn.fetchval(
                    "SELECT updated_at FROM chat_sessions WHERE id = $1 AND user_id = $2", _uuid(before),
                    uuid.UUID(user_id),
                )
                if cursor is None:
                    raise EduserveError(ErrorCode.VALIDATION_ERROR, "before: unknown session id")
            rows = await conn.fetch(
                f"SELECT {SESSION_COLUMNS} FROM chat_sessions WHERE user_id = $1"
                " AND ($2::timestamptz IS NULL OR updated_at < $2) ORDER BY updated_at DESC LIMIT $3",
                uuid.UUID(user_id), cursor, limit + 1,
            )
        page = [dict(r) for r in rows[:limit]]
        return {"data": page, "has_more": len(rows) > limit, "next_before": page[-1]["id"] if len(rows) > limit else None}

    async def _session(self, conn: Any, user_id: str, session_id: str) -> dict[str, Any]:
        row = await conn.fetchrow(
            f"SELECT {SESSION_COLUMNS} FROM chat_sessions WHERE id = $1 AND user_id = $2",
            _uuid(session_id), uuid.UUID(user_id),
        )
        if row is None:  # someone else's session looks exactly like a missing one
            raise not_found()
        return dict(row)

    async def get(self, user_id: str, session_id: str, limit: int, before: str | None) -> dict[str, Any]:
        async with self.db.connection() as conn:
            session = await self._session(conn, user_id, session_id)
            cursor = None
            if before:
                cursor = await conn.fetchval(
                    "SELECT created_at FROM chat_messages WHERE id = $1 AND session_id = $2",
                    _uuid(before), _uuid(session_id),
                )
                if cursor is None:
                    raise EduserveError(ErrorCode.VALIDATION_ERROR, "before: unknown message id")
            rows = await conn.fetch(
                f"SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE session_id = $1"
                " AND ($2::timestamptz IS NULL OR created_at < $2) ORDER BY created_at DESC LIMIT $3",
                _uuid(session_id), cursor, limit + 1,
            )
        newest_first = [_message(r) for r in rows[:limit]]
        has_more = len(rows) > limit
        return {
            **session,
            "messages": list(reversed(newest_first)),
            "has_more": has_more,
            "next_before": newest_first[-1]["id"] if has_more else None,
        }

    async def delete(self, user_id: str, session_id: str) -> None:
        async with self.db.connection() as conn:
            deleted = await conn.fetchval(
                "DELETE FROM chat_sessions WHERE id = $1 AND user_id = $2 RETURNING id",
                _uuid(session_id), uuid.UUID(user_id),
            )
        if deleted is None:
            raise not_found()
        await self.cache.delete(session_id)

    async def context(self, user_id: str, session_id: str) -> dict[str, Any]:
        """Owner and recent turns of a session: Redis/L1 first, else PostgreSQL (then cached)."""
        cached = await self.cache.get(session_id)
        if cached is not None:
            if cached["user_id"] != user_id:
                raise not_found()
            return cached
        async with self.db.connection() as conn:
            session = await self._session(conn, user_id, session_id)
            rows = await conn.fetch(
                "SELECT id::text AS id, role, content FROM chat_messages WHERE session_id = $1"
                " AND status = ANY($2::text[]) ORDER BY created_at DESC LIMIT $3",
                _uuid(session_id), list(HISTORY_STATUSES), self.settings.history_messages_loaded,
            )
        context = {
            "user_id": user_id,
            "title": session["title"],
            "retrieval": session["retrieval"],
            "messages": [dict(r) for r in reversed(rows)],
        }
        await self.cache.set(session_id, context, self.settings.session_cache_ttl_s)
        return context

    async def remember(self, session_id: str, context: dict[str, Any], *messages: dict[str, Any]) -> dict[str, Any]:
        """Append stored messages to the cached context (write-through) and return the new context."""
        turns = context["messages"] + [
            {"id": m["id"], "role": m["role"], "content": m["content"]}
            for m in messages
            if m["role"] == "user" or m["status"] in HISTORY_STATUSES
        ]
        context = {**context, "messages": turns[-self.settings.history_messages_loaded:]}
        await self.cache.set(session_id, context, self.settings.session_cache_ttl_s)
        return context

    async def insert(self, session_id: str, role: str, content: str, status: str,
                      token_count: int | None = None, metadata: dict | None = None,
                      title: str | None = None) -> dict[str, Any]:
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                f"INSERT INTO chat_messages (session_id, role, content, status, token_count, metadata)"
                f" VALUES ($1, $2, $3, $4, $5, $6::jsonb) RETURNING {MESSAGE_COLUMNS}",
                uuid.UUID(session_id), role, content, status, token_count, json.dumps(metadata or {}),
            )
            await conn.execute(
                "UPDATE chat_sessions SET updated_at = now(),"
                " title = CASE WHEN title = '' AND $2::text IS NOT NULL THEN $2 ELSE title END WHERE id = $1",
                uuid.UUID(session_id), title,
            )
        return _message(row)

    async def forget(self, session_id: str) -> None:
        """Drop the cached context: the next turn rebuilds it from PostgreSQL."""
        await self.cache.delete(session_id)
