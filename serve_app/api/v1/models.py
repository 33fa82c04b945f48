from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from serve_app.api.deps import get_state
from serve_app.protocol.models import ModelList
from serve_app.state import AppState

router = APIRouter(tags=["openai"])


@router.get("/v1/models", response_model=ModelList)
async def list_models(state: Annotated[AppState, Depends(get_state)]):
    """Served models, each with a replica's status report (device, active backend, batching counters)."""
    return await state.list_models()
