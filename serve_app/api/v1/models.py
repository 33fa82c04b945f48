from __future__ import annotations

from fastapi import APIRouter

from serve_app.api.deps import State
from serve_app.protocol.models import ModelList

router = APIRouter(tags=["openai"])


@router.get("/v1/models", response_model=ModelList)
async def list_models(state: State):
    """Served models, each with a replica's status report (device, active backend, batching counters)."""
    return await state.list_models()
