from __future__ import annotations

from fastapi import APIRouter

from serve_app.api.deps import CurrentPrincipal, State
from serve_app.errors import EduserveError, ErrorCode
from serve_app.protocol.models import ModelCard, ModelList

router = APIRouter(tags=["openai"])


@router.get("/v1/models", response_model=ModelList)
async def list_models(state: State, principal: CurrentPrincipal):
    """Served models; for an admin, each with its replicas' status reports (device, active backend, batching
    counters, routing), which are operators' business and cost a call to each deployment."""
    return await state.status.list_models(with_status=principal.role == "admin")


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def retrieve_model(model_id: str, state: State, principal: CurrentPrincipal):
    """One served model, by its name, an alias or a LoRA adapter's name (OpenAI `models.retrieve`)."""
    for card in (await state.status.list_models(with_status=principal.role == "admin"))["data"]:
        if model_id == card["id"] or model_id in card.get("aliases", []):
            return card
    raise EduserveError(ErrorCode.MODEL_NOT_FOUND, f"model {model_id!r} not found", param="model")
