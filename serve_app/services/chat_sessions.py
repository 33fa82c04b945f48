"""Chat turns: a user's message in a session (`ChatStore`), the answer streamed as server-sent events.

A turn: the user's message is stored before generation starts; the answer is stored when it ends — as
`completed`, `interrupted` (the client went away; the partial text is kept), `blocked` or `error`. The stream
always ends with a `done` or an `error` event; an answer the database cannot take right now is kept and stored
when it is back (retried for `chat.answer_store_retry_s`), and the stream says so with a `database_unavailable`
error.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from serve_app import request_trace
from serve_app.errors import EduserveError, ErrorCode, error_body
from serve_app.security.principal import Principal
from serve_app.services.chat import ChatService
from serve_app.services.chat_store import ChatStore
from serve_app.services.content import describe_level
from serve_app.services.grounding import (
    GROUNDING,
    NOTHING_FOUND,
    numbered_sources,
    source_refs,
    sources_footer,
)
from serve_app.services.profiles import ProfileService
from serve_app.services.rag import RagService, SearchParams
from serve_app.services.safety import ContentBlocked, OutputGuard, SafetyService
from serve_app.settings import Settings

logger = logging.getLogger("ray.serve.eduserve.chat")

class ChatSessions:
    def __init__(self, store: ChatStore, chat: ChatService, rag: RagService, safety: SafetyService,
                 profiles: ProfileService, settings: Settings):
        self.store = store
        self.chat = chat
        self.rag = rag
        self.safety = safety
        self.profiles = profiles
        self.settings = settings.chat
        self.rag_settings = settings.rag
        self._background: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ a turn

    async def send(
        self, principal: Principal, session_id: str, content: str, *, max_tokens: int | None, temperature: float,
        seed: int | None,
    ) -> AsyncIterator[dict[str, str]]:
        """Store the user's message, start the answer, and return the SSE events of the rest of the turn.

        Raises (before any event) when the session is not the caller's, the safety pipeline blocks the message
        (nothing is stored; the block is recorded), or the model refuses the prompt."""
        context = await self.store.context(principal.user_id, session_id)
        content = await self.safety.check_input(principal, content)  # personal data redacted per policy
        history = [{"role": m["role"], "content": m["content"]} for m in context["messages"]]
        title = content.strip().splitlines()[0][:80] if not context["title"] else None
        user_message = await self.store.insert(session_id, "user", content, "completed", title=title)
        context = await self.store.remember(session_id, {**context, "title": context["title"] or title}, user_message)

        system_prompt, sources = self.settings.system_prompt, None
        level = (await self.profiles.get(principal.user_id)).get("reading_level")
        if level:
            system_prompt += f" The student reads at {describe_level(level)}: match your words and sentences to it."
        if context.get("retrieval"):
            sources = await self._sources(principal, content)
            if not sources:
                return self._canned(session_id, context, user_message["id"], NOTHING_FOUND)
            system_prompt += "\n\n" + GROUNDING.format(sources=numbered_sources(sources))
        payload = self.chat.payload(
            [*history, {"role": "user", "content": content}],
            max_tokens=max_tokens, temperature=temperature, seed=seed,
            history_token_budget=self.settings.history_token_budget, system_prompt=system_prompt,
        )
        items = await self.chat.stream(payload)
        guard = self.safety.output_guard(principal)
        return self._events(session_id, context, user_message["id"], items, guard, sources)

    async def _sources(self, principal: Principal, question: str) -> list[dict[str, Any]]:
        """Chunks relevant enough to ground an answer (reranked hybrid search over readable collections)."""
        found = await self.rag.search(principal, SearchParams(
            query=question, collections=None, top_k=self.rag_settings.top_k, mode="hybrid", rerank=True,
            ef_search=self.rag_settings.ef_search,
        ))
        return [hit for hit in found["results"] if hit["score"] >= self.rag_settings.min_relevance]

    async def _canned(self, session_id: str, context: dict[str, Any], user_message_id: str,
                      text: str) -> AsyncIterator[dict[str, str]]:
        """An answer that needs no model: nothing relevant was found, so nothing is made up."""
        message = await self.store.insert(session_id, "assistant", text, "completed", metadata={"sources": [],
                                                                                         "grounded": False})
        await self.store.remember(session_id, context, message)
        yield {"event": "token", "data": json.dumps({"delta": text})}
        yield {"event": "done", "data": json.dumps({
            "message_id": message["id"], "user_message_id": user_message_id, "finish_reason": "stop",
            "device": None, "sources": [], "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        })}

    async def _events(
        self, session_id: str, context: dict[str, Any], user_message_id: str, items: AsyncIterator[dict[str, Any]],
        guard: OutputGuard, sources: list[dict[str, Any]] | None = None,
    ) -> AsyncIterator[dict[str, str]]:
        """The turn's events; the last is always `done` or `error`, whatever fails (the model, the safety filter,
        the database), except when the client has gone (then the partial answer is stored as interrupted). Long on
        purpose: one try around the whole stream is what guarantees that last event and the stored answer."""
        parts: list[str] = []
        route = request_trace.headers()
        device = dict(route).get(b"x-eduserve-device", b"").decode() or None
        refs = source_refs(sources) if sources is not None else None
        finished = False
        try:
            async for item in guard.stream(items):  # text held back until checked
                if "delta" in item:
                    parts.append(item["delta"])
                    yield {"event": "token", "data": json.dumps({"delta": item["delta"]})}
                    continue
                footer = sources_footer("".join(parts), refs)
                if footer:
                    parts.append(footer)
                    yield {"event": "token", "data": json.dumps({"delta": footer})}
                usage = item["usage"]
                metadata = {"finish_reason": item["finish_reason"], "device": device}
                if refs is not None:
                    metadata |= {"sources": refs, "grounded": True}
                answer = ("".join(parts), "completed", usage["completion_tokens"], metadata)
                message = await self._store(session_id, context, *answer)
                finished = True  # after, not before: a turn cancelled while storing is stored as interrupted
                if message is None:  # generated and shown, but not stored yet: it will be when the database is back
                    raise EduserveError(ErrorCode.DATABASE_UNAVAILABLE, "the answer could not be saved yet; it is "
                                        "kept and saved when the database is back", {"Retry-After": "5"})
                done = {
                    "message_id": message["id"], "user_message_id": user_message_id,
                    "finish_reason": item["finish_reason"], "device": device, "usage": usage,
                }
                if refs is not None:
                    done["sources"] = refs
                yield {"event": "done", "data": json.dumps(done)}
        except ContentBlocked as exc:
            # The answer tripped the filter: what was already shown is kept, marked blocked; the rest never left.
            await items.aclose()
            if not finished:
                finished = True
                await self._store(session_id, context, "".join(parts), "blocked", None,
                                  {"safety_category": exc.category})
            yield {"event": "error", "data": json.dumps(error_body(exc.code, exc.message))}
        except Exception as exc:  # noqa: BLE001 - every started stream ends with an event
            error = exc if isinstance(exc, EduserveError) else None
            if error is None:
                logger.exception("chat turn of session %s failed", session_id)
                error = EduserveError(ErrorCode.MODEL_FAILED, "the answer failed; retry shortly")
            if not finished:
                finished = True
                await self._store(session_id, context, "".join(parts), "error", None, {"error": error.code.code})
            yield {"event": "error", "data": json.dumps(error_body(error.code, error.message))}
        finally:
            if not finished:
                # The client left (or the server is stopping): keep what was generated, marked interrupted.
                # Stored from a task of its own, so the cancellation of this one cannot cut the write short.
                self._in_background(self._store(session_id, context, "".join(parts), "interrupted", None, {}))

    async def _store(self, session_id: str, context: dict[str, Any], text: str, status: str,
                     token_count: int | None, metadata: dict[str, Any]) -> dict[str, Any] | None:
        """Store an answer, or (database unavailable) keep retrying in the background until it is stored or
        `chat.answer_store_retry_s` has passed, and return None. Never raises: a turn always ends with an event."""
        try:
            message = await self.store.insert(session_id, "assistant", text, status, token_count, metadata)
        except EduserveError as exc:
            if exc.code is not ErrorCode.DATABASE_UNAVAILABLE:
                logger.error("answer of session %s not stored: %s", session_id, exc.message)
                return None
            self._in_background(self._store_later(session_id, context, text, status, token_count, metadata))
            return None
        except Exception:  # noqa: BLE001 - logged; the turn still ends with its event
            logger.exception("answer of session %s not stored", session_id)
            return None
        await self.store.remember(session_id, context, message)
        return message

    async def _store_later(self, session_id: str, context: dict[str, Any], text: str, status: str,
                           token_count: int | None, metadata: dict[str, Any]) -> None:
        deadline = asyncio.get_running_loop().time() + self.settings.answer_store_retry_s
        delay = 1.0
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 15.0)
            try:
                await self.store.insert(session_id, "assistant", text, status, token_count, metadata)
            except EduserveError as exc:
                if exc.code is ErrorCode.DATABASE_UNAVAILABLE:
                    continue
                logger.error("answer of session %s not stored: %s", session_id, exc.message)
                return
            logger.info("answer of session %s stored after the database came back", session_id)
            await self.store.forget(session_id)  # rebuilt from the database with the answer in place
            return
        logger.error("answer of session %s (%d chars) lost: the database stayed unavailable for %.0f s",
                     session_id, len(text), self.settings.answer_store_retry_s)

    def _in_background(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
