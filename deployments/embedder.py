"""The Embedder deployment: texts in, L2-normalised float32 vectors out, batched across requests; several
models per replica when the profile lists them (`multiplex`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve

from deployments.backends.base import EmbeddingBackend
from deployments.backends.registry import EMBEDDING_BACKENDS
from deployments.base import ModelReplica
from deployments.common import InvalidTokens, Refusal, text_of_token_ids


@serve.deployment
class Embedder(ModelReplica):
    role = "embedder"
    factories = EMBEDDING_BACKENDS
    backend: EmbeddingBackend

    async def embed(self, texts: list[str | list[int]]) -> dict[str, Any] | Refusal:
        """Embed one request's inputs with the model it names (Serve's multiplexed model id) or the default one.
        An input may be token ids of that model's vocabulary (as vLLM accepts them). Each text joins the
        replica-wide batch queue on its own, so texts of concurrent requests share passes (a lone request runs at once)."""
        backend, error = await self._select()
        if error:
            return error
        try:
            texts = [t if isinstance(t, str) else text_of_token_ids(backend.tokenizer, t) for t in texts]
        except InvalidTokens as exc:
            return Refusal("bad_request", str(exc), "input")
        results = await self._submit([(backend, text) for text in texts])
        return {
            "embeddings": np.stack([vector for vector, _ in results]).astype(np.float32, copy=False),
            "token_counts": [tokens for _, tokens in results],
        }

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _batch(self, items: list[tuple[EmbeddingBackend, str, float]]) -> list[tuple[np.ndarray, int]]:
        # Runs on the replica's user-code loop on purpose: Serve receives requests on its own loop meanwhile, so
        # they are all waiting when this returns and the next batch is full. Offloading to a thread was measured
        # worse on 2 cores: GIL contention starved the loop and batches stayed near 3 instead of 13.
        return self._run_batch(items)

    def _forward(self, backend: EmbeddingBackend, texts: list[str]) -> np.ndarray:
        return backend.encode(texts)

    async def input_window(self) -> dict[str, Any] | Refusal:
        """The model's fast tokenizer, serialised, and how many tokens of one input it reads (special tokens
        included): the ingress checks inputs, and chunks documents, with exactly these tokens (through
        `tokenizers`, without torch)."""
        backend, error = await self._select()
        if error:
            return error
        return {"tokenizer": backend.tokenizer.backend_tokenizer.to_str(), "max_tokens": backend.max_seq_length}

    def _details(self) -> dict[str, Any]:
        if self.backend is None:
            return {}
        details = {"dimensions": self.backend.dimensions, "max_seq_length": self.backend.max_seq_length}
        if getattr(self.backend, "precision", None):  # OpenVINO: bf16 where the CPU computes in it
            details["precision"] = self.backend.precision
        return details
