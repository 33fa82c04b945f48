from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from serve_app.api.deps import get_state
from serve_app.protocol.common import ERROR_RESPONSES
from serve_app.protocol.embeddings import EmbeddingRequest, EmbeddingResponse
from serve_app.state import AppState

router = APIRouter(tags=["openai"])


@router.post("/v1/embeddings", response_model=EmbeddingResponse, responses=ERROR_RESPONSES)
async def create_embeddings(request: EmbeddingRequest, state: Annotated[AppState, Depends(get_state)]):
    """Vectors for one text or a list of texts (OpenAI `embeddings.create`)."""
    # Returned as a prepared JSONResponse: hundreds of vectors need no second pass through pydantic.
    return JSONResponse(await state.embeddings.create(request))
