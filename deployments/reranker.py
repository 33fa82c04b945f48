"""The Reranker deployment: relevance of documents to a query, batched over (query, document) pairs."""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from deployments.backends.base import RerankBackend
from deployments.backends.registry import RERANK_BACKENDS
from deployments.base import ModelReplica


@serve.deployment
class Reranker(ModelReplica):
    role = "reranker"
    factories = RERANK_BACKENDS
    backend: RerankBackend

    async def rerank(self, query: str, documents: list[str]) -> dict[str, Any]:
        """Scores in the documents' order; pairs from concurrent requests share forward passes."""
        self.ongoing += 1
        try:
            results = await asyncio.gather(*(self._batch((query, doc)) for doc in documents))
        finally:
            self.ongoing -= 1
        return {"scores": [score for score, _ in results], "token_counts": [tokens for _, tokens in results]}

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def _batch(self, pairs: list[tuple[str, str]]) -> list[tuple[float, int]]:
        # On the user-code loop on purpose, as in Embedder._batch.
        scores, lengths = self._run_batch(pairs, self.backend.count_tokens, self.backend.score)
        return [(float(score), tokens) for score, tokens in zip(scores, lengths, strict=True)]

    def _details(self) -> dict[str, Any]:
        return {"max_seq_length": self.backend.max_seq_length}
