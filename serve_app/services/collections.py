"""Collections and who may read and write them.

- every user has a private collection (`private` in the API), readable and writable by its owner only;
- course collections are created by teachers or admins; teachers and admins read and write all of them;
  a student reads the courses they are a member of; a course's budget is managed by its teacher (owner).
A collection the caller may not read is reported exactly like a missing one (404).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from serve_app.errors import EduserveError, ErrorCode
from serve_app.security.principal import Principal
from serve_app.storage.db import Database

PRIVATE = "private"
STAFF = ("teacher", "admin")


@dataclass(frozen=True)
class Collection:
    id: str
    name: str
    kind: str
    owner_id: str | None


def not_found(what: str = "collection") -> EduserveError:
    return EduserveError(ErrorCode.NOT_FOUND, f"no such {what}")


def private_name(user_id: str) -> str:
    return f"private-{user_id}"


def public_name(name: str) -> str:
    """A collection's name as the API shows it: each user's private collection is `private` to them (course
    names may not take the `private-` prefix, so the prefix alone tells)."""
    return PRIVATE if name.startswith("private-") else name


class CollectionService:
    def __init__(self, db: Database):
        self.db = db

    async def _private(self, conn: asyncpg.Connection, principal: Principal) -> Collection:
        # Created on first use; an existing row is read, not rewritten.
        row = await conn.fetchrow(
            "WITH created AS (INSERT INTO collections (name, kind, owner_id) VALUES ($1, 'private', $2)"
            "                 ON CONFLICT (name) DO NOTHING RETURNING id, name, kind, owner_id)"
            " SELECT id::text AS id, name, kind, owner_id::text AS owner_id FROM created"
            " UNION ALL SELECT id::text, name, kind, owner_id::text FROM collections WHERE name = $1 LIMIT 1",
            private_name(principal.user_id), uuid.UUID(principal.user_id),
        )
        return Collection(**dict(row))

    async def resolve(self, conn: asyncpg.Connection, principal: Principal, name: str, write: bool) -> Collection:
        """The named collection if the caller may read it (or write it, when `write`); else 404 or 403."""
        if name == PRIVATE or name == private_name(principal.user_id):
            return await self._private(conn, principal)
        row = await conn.fetchrow(
            "SELECT id::text AS id, name, kind, owner_id::text AS owner_id FROM collections WHERE name = $1", name
        )
        if row is None:
            raise not_found()
        collection = Collection(**dict(row))
        if not await self.can_read(conn, principal, collection):
            raise not_found()
        if write and not self.can_write(principal, collection):
            raise EduserveError(ErrorCode.FORBIDDEN, "only teachers and admins add to or remove from course collections")
        return collection

    async def can_read(self, conn: asyncpg.Connection, principal: Principal, collection: Collection) -> bool:
        if collection.kind == "private":
            return collection.owner_id == principal.user_id
        if principal.role in STAFF:
            return True
        return bool(await conn.fetchval(
            "SELECT 1 FROM collection_members WHERE collection_id = $1 AND user_id = $2",
            uuid.UUID(collection.id), uuid.UUID(principal.user_id),
        ))

    @staticmethod
    def can_write(principal: Principal, collection: Collection) -> bool:
        if collection.kind == "private":
            return collection.owner_id == principal.user_id
        return principal.role in STAFF

    async def readable(self, conn: asyncpg.Connection, principal: Principal) -> list[dict[str, Any]]:
        """Every collection the caller may read, with its version (for cache keys)."""
        await self._private(conn, principal)
        rows = await conn.fetch(
            "SELECT c.id::text AS id, c.name, c.kind, c.version FROM collections c"
            " WHERE (c.kind = 'private' AND c.owner_id = $1)"
            "    OR (c.kind = 'course' AND ($2 OR EXISTS (SELECT 1 FROM collection_members m"
            "                                           WHERE m.collection_id = c.id AND m.user_id = $1)))"
            " ORDER BY c.name",
            uuid.UUID(principal.user_id), principal.role in STAFF,
        )
        return [dict(r) for r in rows]

    async def create_course(self, principal: Principal, name: str) -> dict[str, Any]:
        if principal.role not in STAFF:
            raise EduserveError(ErrorCode.FORBIDDEN, "only teachers and admins create course collections")
        if name == PRIVATE or name.startswith("private-"):
            raise EduserveError(ErrorCode.VALIDATION_ERROR, "name: the private- prefix is reserved")
        try:
            async with self.db.connection() as conn:
                row = await conn.fetchrow(
                    "INSERT INTO collections (name, kind, owner_id) VALUES ($1, 'course', $2)"
                    " RETURNING id::text AS id, name, kind, version",
                    name, uuid.UUID(principal.user_id),
                )
        except asyncpg.UniqueViolationError:
            raise EduserveError(ErrorCode.CONFLICT, f"collection {name!r} already exists") from None
        return dict(row)

    async def add_member(self, principal: Principal, name: str, email: str) -> None:
        async with self.db.connection() as conn:
            collection = await self.resolve(conn, principal, name, write=True)
            if collection.kind != "course":
                raise EduserveError(ErrorCode.VALIDATION_ERROR, "only course collections have members")
            user = await conn.fetchval("SELECT id FROM users WHERE lower(email) = lower($1)", email)
            if user is None:
                raise not_found("user")
            await conn.execute(
                "INSERT INTO collection_members (collection_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                uuid.UUID(collection.id), user,
            )

    async def owned_course(self, principal: Principal, name: str) -> str:
        """The id of a course collection the caller teaches (owns) or, as an admin, manages; else 404 or 403."""
        async with self.db.connection() as conn:
            collection = await self.resolve(conn, principal, name, write=True)
        if collection.kind != "course":
            raise EduserveError(ErrorCode.VALIDATION_ERROR, "only course collections have budgets")
        if principal.role != "admin" and collection.owner_id != principal.user_id:
            raise EduserveError(ErrorCode.FORBIDDEN, "only the course's teacher or an admin manages its budget")
        return collection.id

    async def list_collections(self, principal: Principal) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            collections = await self.readable(conn, principal)
        return [{**c, "name": public_name(c["name"])} for c in collections]
