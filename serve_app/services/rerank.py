"""Reranking: limits, one call to the Reranker, results sorted best first."""

from __future__ import annotations

import uuid
from typing import Any

from serve_app.catalog import ModelCatalog
from serve_app.protocol.rerank import RerankRequest
from serve_app.routing import ModelRouter
from serve_app.services.embeddings import check_model_result, check_text_limits
from serve_app.settings import LimitSettings


class RerankService:
    def __init__(self, client: ModelRouter, catalog: ModelCatalog, limits: LimitSettings):
        self.client = client
        self.catalog = catalog
        self.limits = limits

    async def scores(self, query: str, documents: list[str], model_id: str | None = None) -> tuple[list[float], int]:
        """Relevance of each document to `query`, in the documents' order, and tokens used."""
        check_text_limits([query], 1, self.limits.max_input_chars, "query")
        check_text_limits(documents, self.limits.max_rerank_documents, self.limits.max_input_chars, "document")
        result = check_model_result(await self.client.call("rerank", query, documents, multiplexed_model_id=model_id))
        return result["scores"], int(sum(result["token_counts"]))

    async def rerank(self, request: RerankRequest) -> dict[str, Any]:
        model = self.catalog.resolve("reranker", request.model)
        documents = request.document_texts()
        scores, tokens = await self.scores(request.query, documents, model.multiplexed_id)
        order = sorted(range(len(documents)), key=lambda i: scores[i], reverse=True)
        if request.top_n is not None:
            order = order[: request.top_n]
        results = []
        for index in order:
            result: dict[str, Any] = {"index": index, "relevance_score": scores[index]}
            if request.return_documents:
                result["document"] = {"text": documents[index]}
            results.append(result)
        return {"id": uuid.uuid4().hex, "model": model.name, "results": results, "usage": {"total_tokens": tokens}}
