"""Usage accounting: what each model call consumed (prompt and completion tokens, embedded tokens, reranked
documents, seconds of speech), per user, API key, role and model.

The caller is bound to the request's context by the authentication dependency (`bind`), so every model call
made on a request's behalf (a RAG query's embedding, a chat turn's rerank) is counted to that caller without
passing it down. Each ingress replica adds to an in-memory buffer (one entry per minute × caller × model × kind:
a dict update, nothing on the hot path waits for storage) and writes it to PostgreSQL every
`usage.flush_interval_s` with one upsert that adds to what other replicas wrote. A failed write keeps the rows:
they are written when the database is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from serve_app.errors import EduserveError
from serve_app.settings import UsageSettings

if TYPE_CHECKING:
    from serve_app.security.principal import Principal
    from serve_app.services.budgets import BudgetService, Limit
    from serve_app.storage.db import Database

logger = logging.getLogger("ray.serve.eduserve.usage")

COLUMNS = ("requests", "prompt_tokens", "completion_tokens", "documents", "audio_seconds")
UPSERT = (
    "INSERT INTO usage_minutes (minute, user_id, api_key, role, model, kind, requests, prompt_tokens,"
    " completion_tokens, documents, audio_seconds) VALUES (to_timestamp($1), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    " ON CONFLICT (user_id, minute, api_key, role, model, kind) DO UPDATE SET"
    + ",".join(f" {c} = usage_minutes.{c} + EXCLUDED.{c}" for c in COLUMNS)
)


@dataclass
class Caller:
    """Whom the current request's model calls are counted to; `limits` are its budgets once admitted."""

    user_id: str
    role: str
    api_key: str = ""  # the API key's id; "" for a signed-in user's own token
    limits: list[Limit] | None = None  # None: not admitted yet on this request


_CALLER: ContextVar[Caller | None] = ContextVar("eduserve_usage_caller", default=None)


def bind(principal: Principal) -> None:
    """Count this request's model calls to `principal` (called once it is authenticated)."""
    _CALLER.set(Caller(principal.user_id, principal.role,
                       principal.credential_id if principal.kind == "api_key" else ""))


def current() -> Caller | None:
    return _CALLER.get()


@dataclass
class Consumed:
    prompt_tokens: int = 0  # the prompt's tokens, or the embedded / reranked text's
    completion_tokens: int = 0
    documents: int = 0  # reranked documents, translated texts
    audio_seconds: float = 0.0

    @property
    def tokens(self) -> int:
        """What token budgets count."""
        return self.prompt_tokens + self.completion_tokens


Key = tuple[int, str, str, str, str, str]  # minute (epoch s), user, api key, role, model, kind


@dataclass
class UsageMeter:
    settings: UsageSettings
    buffer: dict[Key, list[float]] = field(default_factory=dict)
    writing: dict[Key, list[float]] = field(default_factory=dict)  # the rows of the write in progress
    db: Database | None = None
    budgets: BudgetService | None = None
    _flusher: asyncio.Task | None = None
    _flush_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def open(self, db: Database, budgets: BudgetService | None) -> None:
        self.db, self.budgets = db, budgets
        if self.settings.enabled:
            self._flusher = asyncio.create_task(self._flush_forever(), name="usage-flush")

    async def admit(self) -> None:
        """Before a model call: 429 when the caller's token budget is used up (checked once per request)."""
        caller = current()
        if caller is not None and caller.limits is None:
            if self.budgets is None:
                caller.limits = []
            else:
                await self.budgets.admit(caller)

    def record(self, model: str, kind: str, consumed: Consumed) -> None:
        """Count one model call to the request's caller. Synchronous on purpose: it also runs where a stream
        was cancelled (the client went away), so an interrupted answer counts as far as it got."""
        caller = current()
        if caller is None or not self.settings.enabled:
            return
        key = (int(time.time() // 60 * 60), caller.user_id, caller.api_key, caller.role, model, kind)
        row = self.buffer.setdefault(key, [0, 0, 0, 0, 0.0])
        for index, amount in enumerate((1, consumed.prompt_tokens, consumed.completion_tokens, consumed.documents,
                                        consumed.audio_seconds)):
            row[index] += amount
        if self.budgets is not None and consumed.tokens:
            self.budgets.charge(caller, consumed.tokens)

    def unwritten_tokens(self, user_id: str, api_key: str | None, since: float) -> int:
        """Tokens this replica counted for a user (and key, when given) since `since` (a budget window's start,
        always a minute's) that are not in PostgreSQL yet."""
        total = 0
        for rows in (self.buffer, self.writing):
            for (minute, user, key, *_), row in rows.items():
                if user == user_id and minute >= since and (api_key is None or key == api_key):
                    total += int(row[1] + row[2])
        return total

    async def flush(self) -> bool:
        """Write the buffer; on failure the rows go back into it (added to what was counted meanwhile)."""
        async with self._flush_lock:
            if not self.buffer or self.db is None:
                return True
            self.writing, self.buffer = self.buffer, {}
            rows = [(minute, uuid.UUID(user), key, role, model, kind, int(r[0]), int(r[1]), int(r[2]), int(r[3]),
                     float(r[4])) for (minute, user, key, role, model, kind), r in sorted(self.writing.items())]
            try:
                async with self.db.transaction() as conn:
                    await conn.executemany(UPSERT, rows)
                written = True
            except (EduserveError, OSError) as exc:
                logger.warning("usage not written yet (%d rows kept): %s", len(rows), exc)
                written = False
            except Exception:  # noqa: BLE001 - never lose counted usage to an unexpected error
                logger.exception("usage not written yet (%d rows kept)", len(rows))
                written = False
            if not written:
                for key, row in self.writing.items():
                    kept = self.buffer.setdefault(key, [0, 0, 0, 0, 0.0])
                    for index, amount in enumerate(row):
                        kept[index] += amount
            self.writing = {}
            return written

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_interval_s)
            await self.flush()

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        if not await self.flush():
            logger.error("replica stopping with usage not written: %d rows", len(self.buffer))
