"""`/v2/profiles/me`: the student's profile (defaults for the content and chat routes) and learning progress."""

from __future__ import annotations

from fastapi import APIRouter, Response

from serve_app.api.deps import CurrentPrincipal, State
from serve_app.protocol.content import Profile, ProfileOut, ProgressEvent, ProgressSummary

router = APIRouter(tags=["profiles"])


@router.get("/v2/profiles/me", response_model=ProfileOut)
async def read_profile(principal: CurrentPrincipal, state: State):
    return await state.profiles.get(principal.user_id)


@router.put("/v2/profiles/me", response_model=ProfileOut)
async def write_profile(body: Profile, principal: CurrentPrincipal, state: State):
    """Reading level (`grade N` or CEFR), preferred language, voice, interests: defaults for the other routes."""
    return await state.profiles.put(principal.user_id, body.model_dump())


@router.post("/v2/profiles/me/progress", status_code=204)
async def record_progress(body: ProgressEvent, principal: CurrentPrincipal, state: State):
    await state.profiles.record(principal.user_id, body.model_dump())
    return Response(status_code=204)


@router.get("/v2/profiles/me/progress", response_model=ProgressSummary)
async def progress(principal: CurrentPrincipal, state: State):
    return await state.profiles.summary(principal.user_id)
