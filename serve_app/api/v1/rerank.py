from __future__ import annotations

from fastapi import APIRouter

from serve_app.api.deps import State
from serve_app.protocol.common import ERROR_RESPONSES
from serve_app.protocol.rerank import RerankRequest, RerankResponse

router = APIRouter(tags=["rerank"])


@router.post("/v1/rerank", response_model=RerankResponse, responses=ERROR_RESPONSES)
async def rerank(request: RerankRequest, state: State):
    """Orders documents by relevance to the query (Cohere/TEI rerank shape)."""
    return await state.rerank.rerank(request)
