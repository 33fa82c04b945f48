"""`/v2/rag/search`: hybrid search over the collections the caller may read."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import ValidationError

from serve_app.api.deps import CurrentPrincipal, State
from serve_app.errors import EduserveError, ErrorCode
from serve_app.protocol.rag import SearchRequest, SearchResponse
from serve_app.services.rag import search_params

router = APIRouter(tags=["rag"])


@router.post("/v2/rag/search", response_model=SearchResponse)
async def search(body: SearchRequest, principal: CurrentPrincipal, state: State):
    """Dense + full-text search fused by RRF, re-ordered by the Reranker, within readable collections."""
    try:
        params = search_params(state.settings.rag, body.query, body.collections, body.top_k, body.mode,
                               body.rerank, body.ef_search)
    except ValidationError as exc:  # pragma: no cover - pydantic already validated the body
        raise EduserveError(ErrorCode.VALIDATION_ERROR, str(exc)) from None
    return await state.rag.search(principal, params)
