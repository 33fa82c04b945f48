"""The Reranker deployment: relevance of documents to a query, batched over (query, document) pairs; several
models per replica when the profile lists them (`multiplex`)."""

from __future__ import annotations

from typing import Any

from ray import serve

from deployments.backends.base import RerankBackend
from deployments.backends.registry import RERANK_BACKENDS
from deployments.base import ModelReplica
from deployments.common import Refusal, truncate_to_tokens


@serve.deployment
class Reranker(ModelReplica):
    role = "reranker"
    factories = RERANK_BACKENDS
    backend: RerankBackend

    async def rerank(self, query: str, documents: list[str], max_tokens_per_doc: int | None = None) -> dict[str, Any] | Refusal:
        """Scores in the documents' order; pairs from concurrent requests share forward passes. With
        `max_tokens_per_doc`, each document is cut to that many of the model's tokens first (Cohere's v2 API)."""
        backend, error = await self._select()
        if error:
            return error
        if max_tokens_per_doc is not None:
            documents = [truncate_to_tokens(backend.tokenizer, doc, max_tokens_per_doc) for doc in documents]
        results = await self._submit([(backend, (query, doc)) for doc in documents])
        return {"scores": [float(score) for score, _ in results], "token_counts": [tokens for _, tokens in results]}

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def _batch(self, items: list[tuple[RerankBackend, tuple[str, str], float]]) -> list[tuple[float, int]]:
        # On the user-code loop on purpose, as in Embedder._batch. Items: (backend, pair, enqueued at).
        return self._run_batch(items)

    def _forward(self, backend: RerankBackend, pairs: list[tuple[str, str]]) -> Any:
        return backend.score(pairs)

    def _details(self) -> dict[str, Any]:
        return {"max_seq_length": self.backend.max_seq_length} if self.backend is not None else {}
