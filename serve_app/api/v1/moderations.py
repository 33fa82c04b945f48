from __future__ import annotations

import uuid

from fastapi import APIRouter

from serve_app.api.deps import CurrentPrincipal, State
from serve_app.errors import EduserveError, ErrorCode
from serve_app.protocol.content import ModerationRequest, ModerationResponse

router = APIRouter(tags=["openai"])


@router.post("/v1/moderations", response_model=ModerationResponse)
async def create_moderation(body: ModerationRequest, principal: CurrentPrincipal,
                            state: State):
    """OpenAI-shaped moderation, flagged by the caller's role thresholds. Categories: harassment (toxicity),
    self-harm, prompt-injection, personal-data."""
    model = state.catalog.resolve("safety", body.model)
    texts = body.texts()
    if not texts or any(not isinstance(t, str) or not t for t in texts) or len(texts) > state.settings.limits.max_inputs_per_request:
        raise EduserveError(ErrorCode.BAD_REQUEST, "input: one to max_inputs_per_request non-empty strings",
                            param="input")
    results = await state.safety.moderate(principal, texts)
    return {"id": f"modr-{uuid.uuid4().hex}", "model": model.name, "results": results}
