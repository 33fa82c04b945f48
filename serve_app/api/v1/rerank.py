from __future__ import annotations

from fastapi import APIRouter

from serve_app.api.deps import State
from serve_app.protocol.rerank import CohereRerankRequest, CohereRerankResponse, RerankRequest, RerankResponse

router = APIRouter(tags=["rerank"])


@router.post("/v1/rerank", response_model=RerankResponse)
async def rerank(request: RerankRequest, state: State):
    """Orders documents by relevance to the query (Cohere/TEI rerank shape)."""
    return await state.rerank.rerank(request)


@router.post("/v2/rerank", response_model=CohereRerankResponse, response_model_exclude_none=True)
async def rerank_v2(request: CohereRerankRequest, state: State):
    """Orders documents by relevance to the query in Cohere's v2 API shape (the v2 Cohere client's `rerank`)."""
    return await state.rerank.rerank_v2(request)
