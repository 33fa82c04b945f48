from __future__ import annotations

import uuid

from fastapi import APIRouter

from serve_app.api.deps import CurrentPrincipal, State
from serve_app.errors import EduserveError, ErrorCode
from serve_app.protocol.content import ModerationRequest, ModerationResponse
from serve_app.services.safety import CATEGORY_NAMES

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
    reports = await state.safety.scan(texts, injection=True)
    thresholds = state.settings.safety.thresholds[principal.role]
    results = []
    for report in reports:
        scores = report["scores"]
        categories = {CATEGORY_NAMES[c]: scores[c] >= thresholds[c] for c in thresholds}
        categories[CATEGORY_NAMES["pii"]] = bool(report["pii"])
        results.append({
            "flagged": any(categories.values()),
            "categories": categories,
            "category_scores": {CATEGORY_NAMES[c]: round(float(v), 4) for c, v in scores.items()},
        })
    return {"id": f"modr-{uuid.uuid4().hex}", "model": model.name, "results": results}
