"""Reranking: limits, one call to the Reranker, results sorted best first."""

from __future__ import annotations

import math
import uuid
from typing import Any

from serve_app.catalog import ModelCatalog
from serve_app.protocol.rerank import CohereRerankRequest, RerankRequest
from serve_app.routing import ModelRouter
from serve_app.services.embeddings import check_text_limits
from serve_app.services.usage import Consumed, UsageMeter
from serve_app.settings import LimitSettings


class RerankService:
    def __init__(self, router: ModelRouter, catalog: ModelCatalog, limits: LimitSettings, meter: UsageMeter):
        self.router = router
        self.catalog = catalog
        self.limits = limits
        self.meter = meter

    async def scores(self, query: str, documents: list[str], model_id: str | None = None,
                     max_tokens_per_doc: int | None = None) -> tuple[list[float], int]:
        """Relevance of each document to `query`, in the documents' order, and tokens used."""
        check_text_limits([query], 1, self.limits.max_input_chars, "query")
        check_text_limits(documents, self.limits.max_rerank_documents, self.limits.max_input_chars, "document")
        extra = {"max_tokens_per_doc": max_tokens_per_doc} if max_tokens_per_doc is not None else {}
        await self.meter.admit()
        result = await self.router.call("rerank", query, documents, multiplexed_model_id=model_id, **extra)
        tokens = int(sum(result["token_counts"]))
        model = model_id or self.catalog.resolve("reranker", None).name
        self.meter.record(model, "rerank", Consumed(prompt_tokens=tokens, documents=len(documents)))
        return result["scores"], tokens

    async def rerank(self, request: RerankRequest) -> dict[str, Any]:
        """The Cohere v1 / TEI shape (`/v1/rerank`)."""
        model, results, tokens = await self._ranked(request)
        return {"id": uuid.uuid4().hex, "model": model, "results": results, "usage": {"total_tokens": tokens}}

    async def rerank_v2(self, request: CohereRerankRequest) -> dict[str, Any]:
        """Cohere's v2 shape (`/v2/rerank`): billed units and token counts under `meta`."""
        _, results, tokens = await self._ranked(request, request.max_tokens_per_doc)
        units = max(1, math.ceil(len(request.documents) / 100))
        return {"id": str(uuid.uuid4()), "results": results,
                "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": units},
                         "tokens": {"input_tokens": tokens}}}

    async def _ranked(self, request: RerankRequest,
                      max_tokens_per_doc: int | None = None) -> tuple[str, list[dict[str, Any]], int]:
        model = self.catalog.resolve("reranker", request.model)
        documents = request.document_texts()
        scores, tokens = await self.scores(request.query, documents, model.multiplexed_id, max_tokens_per_doc)
        order = sorted(range(len(documents)), key=lambda i: scores[i], reverse=True)
        if request.top_n is not None:
            order = order[: request.top_n]
        results = []
        for index in order:
            result: dict[str, Any] = {"index": index, "relevance_score": scores[index]}
            if request.return_documents:
                result["document"] = {"text": documents[index]}
            results.append(result)
        return model.name, results, tokens
