"""Student profiles (reading level, language, voice, interests) and learning progress. The profile supplies
defaults elsewhere: simplify uses the reading level, translate the language, TTS the voice, chat the level."""

from __future__ import annotations

import json
import uuid
from typing import Any

from serve_app.errors import EduserveError, ErrorCode
from serve_app.storage.cache import TieredCache
from serve_app.storage.db import Database

FIELDS = ("reading_level", "preferred_language", "voice", "interests")


class ProfileService:
    def __init__(self, db: Database, cache: TieredCache):
        self.db = db
        self.cache = cache

    async def get(self, user_id: str) -> dict[str, Any]:
        cached = await self.cache.get(user_id)
        if cached is not None:
            return cached
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT reading_level, preferred_language, voice, interests, updated_at FROM student_profiles"
                " WHERE user_id = $1", uuid.UUID(user_id),
            )
        profile = dict(row) if row else {field: None for field in FIELDS} | {"interests": [], "updated_at": None}
        profile["interests"] = list(profile["interests"] or [])
        await self.cache.set(user_id, json.loads(json.dumps(profile, default=str)), 300)
        return profile

    async def put(self, user_id: str, profile: dict[str, Any]) -> dict[str, Any]:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "INSERT INTO student_profiles (user_id, reading_level, preferred_language, voice, interests)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO UPDATE SET reading_level = $2,"
                " preferred_language = $3, voice = $4, interests = $5, updated_at = now()"
                " RETURNING reading_level, preferred_language, voice, interests, updated_at",
                uuid.UUID(user_id), profile["reading_level"], profile["preferred_language"], profile["voice"],
                profile["interests"],
            )
        await self.cache.delete(user_id)
        return dict(row)

    async def record(self, user_id: str, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "quiz_score" and (event.get("score") is None or event.get("max_score") is None):
            raise EduserveError(ErrorCode.VALIDATION_ERROR, "quiz_score needs score and max_score")
        if kind == "quiz_score" and event["score"] > event["max_score"]:
            raise EduserveError(ErrorCode.VALIDATION_ERROR, "score: at most max_score")
        if kind == "document_read" and not event.get("document_id"):
            raise EduserveError(ErrorCode.VALIDATION_ERROR, "document_read needs document_id")
        payload = {k: v for k, v in event.items() if k != "kind" and v is not None}
        async with self.db.connection() as conn:
            await conn.execute("INSERT INTO learning_events (user_id, kind, payload) VALUES ($1, $2, $3::jsonb)",
                               uuid.UUID(user_id), kind, json.dumps(payload))

    async def summary(self, user_id: str) -> dict[str, Any]:
        async with self.db.connection() as conn:
            totals = await conn.fetch(
                "SELECT kind, count(*) AS n FROM learning_events WHERE user_id = $1 GROUP BY kind", uuid.UUID(user_id)
            )
            stats = await conn.fetchrow(
                "SELECT count(DISTINCT payload->>'document_id') FILTER (WHERE kind = 'document_read') AS documents,"
                " avg(100.0 * (payload->>'score')::float / (payload->>'max_score')::float)"
                "   FILTER (WHERE kind = 'quiz_score') AS quiz_percent,"
                " max(created_at) AS last_activity FROM learning_events WHERE user_id = $1",
                uuid.UUID(user_id),
            )
            recent = await conn.fetch(
                "SELECT kind, payload, created_at FROM learning_events WHERE user_id = $1"
                " ORDER BY created_at DESC LIMIT 10", uuid.UUID(user_id),
            )
        by_kind = {r["kind"]: r["n"] for r in totals}
        return {
            "events": sum(by_kind.values()),
            "by_kind": by_kind,
            "documents_read": stats["documents"] or 0,
            "quizzes": by_kind.get("quiz_score", 0),
            "average_quiz_percent": round(stats["quiz_percent"], 1) if stats["quiz_percent"] is not None else None,
            "last_activity": stats["last_activity"],
            "recent": [{"kind": r["kind"], **json.loads(r["payload"]), "at": r["created_at"].isoformat()} for r in recent],
        }
