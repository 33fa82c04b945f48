from __future__ import annotations

from fastapi import APIRouter

from serve_app.api.deps import State
from serve_app.errors import EduserveError, ErrorCode
from serve_app.protocol.models import ModelCard, ModelList

router = APIRouter(tags=["openai"])


@router.get("/v1/models", response_model=ModelList)
async def list_models(state: State):
    """Served models, each with a replica's status report (device, active backend, batching counters)."""
    return await state.status.list_models()


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def retrieve_model(model_id: str, state: State):
    """One served model, by its name, an alias or a LoRA adapter's name (OpenAI `models.retrieve`)."""
    for card in (await state.status.list_models())["data"]:
        if model_id == card["id"] or model_id in card.get("aliases", []):
            return card
    raise EduserveError(ErrorCode.MODEL_NOT_FOUND, f"model {model_id!r} not found", param="model")
