"""The small interfaces a deployment needs from a backend, split as pre-process / core / post-process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class EmbeddingBackend(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    dimensions: int
    max_seq_length: int
    tokenizer: Any  # a transformers tokenizer (token-id inputs, the ingress's chunker)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Pre-process: tokens per text after truncation (used for token budgets and usage)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Core + post-process: one forward pass over `texts`, shape (n, dimensions), float32, unit length."""


class RerankBackend(Protocol):
    """Scores (query, document) pairs; higher is more relevant, in [0, 1]."""

    max_seq_length: int
    tokenizer: Any  # a transformers tokenizer (per-document token limits)

    def count_tokens(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        """Pre-process: tokens per pair as the model sees it."""

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Core + post-process: relevance per pair, float32 in [0, 1]."""
