from __future__ import annotations

from fastapi import APIRouter
from ray import serve

from serve_app.api.deps import State
from serve_app.api.responses import VectorJSONResponse
from serve_app.protocol.embeddings import EmbeddingRequest, EmbeddingResponse

router = APIRouter(tags=["openai"])


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def create_embeddings(request: EmbeddingRequest, state: State):
    """Vectors for one text or a list of texts (OpenAI `embeddings.create`). `model` picks one of the served
    embedding models (several may share a replica); without it, Serve's `serve_multiplexed_model_id` header
    (which the proxy hands to this replica) does."""
    header_model = serve.get_multiplexed_model_id()
    if request.model is None and header_model:
        request = request.model_copy(update={"model": header_model})
    # Returned prepared: hundreds of vectors need no second pass through pydantic.
    return VectorJSONResponse(await state.embeddings.create(request))
