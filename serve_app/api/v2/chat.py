from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from sse_starlette import EventSourceResponse

from serve_app.api.deps import CurrentPrincipal, State
from serve_app.protocol.chat import MessageCreate, SessionCreate, SessionDetail, SessionList, SessionOut

router = APIRouter(prefix="/v2/chat", tags=["chat"])


@router.post("", status_code=201, response_model=SessionOut)
async def create_session(body: SessionCreate, principal: CurrentPrincipal, state: State):
    return await state.chat_store.create(principal.user_id, body.title, body.retrieval)


@router.get("", response_model=SessionList)
async def list_sessions(principal: CurrentPrincipal, state: State,
                        limit: Annotated[int, Query(ge=1, le=100)] = 20, before: str | None = None):
    """The caller's sessions, most recently active first."""
    return await state.chat_store.list(principal.user_id, limit, before)


@router.get("/{session_id}", response_model=SessionDetail)
async def read_session(session_id: str, principal: CurrentPrincipal, state: State,
                       limit: Annotated[int, Query(ge=1, le=200)] = 50, before: str | None = None):
    """A session with its newest `limit` messages (older pages: `before=<next_before>`)."""
    return await state.chat_store.get(principal.user_id, session_id, limit, before)


@router.delete("/{session_id}", status_code=204)
async def delete_session(session_id: str, principal: CurrentPrincipal, state: State):
    await state.chat_store.delete(principal.user_id, session_id)
    return Response(status_code=204)


@router.post(
    "/{session_id}/messages",
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "events: `token` {delta}, `done` {message_id, usage, ...}, `error` {error}"}},
)
async def send_message(session_id: str, body: MessageCreate, principal: CurrentPrincipal, state: State):
    """Add the user's message and stream the answer as server-sent events."""
    events = await state.sessions.send(
        principal, session_id, body.content,
        max_tokens=body.max_tokens, temperature=body.temperature, seed=body.seed,
    )
    return EventSourceResponse(events, ping=15)
