"""The Reranker deployment: relevance of documents to a query, batched over (query, document) pairs."""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from deployments.backends.base import RerankBackend
from deployments.backends.registry import RERANK_BACKENDS
from deployments.base import ModelReplica
from deployments.common import run_in_token_budget


@serve.deployment
class Reranker(ModelReplica):
    role = "reranker"
    factories = RERANK_BACKENDS
    backend: RerankBackend

    async def rerank(self, query: str, documents: list[str]) -> dict[str, Any]:
        """Scores in the documents' order; pairs from concurrent requests share forward passes."""
        results = await asyncio.gather(*(self._batch((query, doc)) for doc in documents))
        return {"scores": [score for score, _ in results], "token_counts": [tokens for _, tokens in results]}

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def _batch(self, pairs: list[tuple[str, str]]) -> list[tuple[float, int]]:
        # Runs on the replica's user-code loop on purpose: Serve receives requests on its own loop meanwhile, so
        # they are all waiting when this returns and the next batch is full. Offloading to a thread was measured
        # worse on 2 cores: GIL contention starved the loop and batches stayed near 3 instead of 13.
        return self._forward(pairs)

    def _forward(self, pairs: list[tuple[str, str]]) -> list[tuple[float, int]]:
        lengths = self.backend.count_tokens(pairs)
        scores, passes = run_in_token_budget(pairs, lengths, self.batching.max_batch_tokens, self.backend.score)
        self.stats.record(len(pairs), passes)
        return [(float(score), tokens) for score, tokens in zip(scores, lengths, strict=True)]

    def _details(self) -> dict[str, Any]:
        return {"max_seq_length": self.backend.max_seq_length}
