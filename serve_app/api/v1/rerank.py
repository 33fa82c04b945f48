from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from serve_app.api.deps import get_state
from serve_app.protocol.common import ERROR_RESPONSES
from serve_app.protocol.rerank import RerankRequest, RerankResponse
from serve_app.state import AppState

router = APIRouter(tags=["rerank"])


@router.post("/v1/rerank", response_model=RerankResponse, responses=ERROR_RESPONSES)
async def rerank(request: RerankRequest, state: Annotated[AppState, Depends(get_state)]):
    """Orders documents by relevance to the query (Cohere/TEI rerank shape)."""
    return await state.rerank.rerank(request)
