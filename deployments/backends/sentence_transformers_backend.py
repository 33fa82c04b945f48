"""sentence-transformers backends: bi-encoder embeddings (cpu default) and CrossEncoder reranking."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deployments.common import DeviceInfo, resolve_model_source
from deployments.spec import BackendSpec


def _torch_dtype(device: DeviceInfo):
    import torch

    return getattr(torch, device.dtype)


class SentenceTransformerEmbedding:
    """`SentenceTransformer.encode` with the model's own pooling and normalisation."""

    def __init__(self, spec: BackendSpec, device: DeviceInfo):
        from sentence_transformers import SentenceTransformer

        options = dict(spec.options)
        max_seq_length = options.pop("max_seq_length", None)
        self.model = SentenceTransformer(
            resolve_model_source(spec.model),
            device=device.torch_device,
            model_kwargs={"dtype": _torch_dtype(device)},
            **options,
        )
        if max_seq_length:
            self.model.max_seq_length = int(max_seq_length)
        self.max_seq_length = int(self.model.max_seq_length)
        self.dimensions = int(self.model.get_embedding_dimension())
        self.tokenizer = self.model.tokenizer

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_seq_length)
        return [len(ids) for ids in encoded["input_ids"]]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.model.encode(
            list(texts),
            batch_size=max(1, len(texts)),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class CrossEncoderRerank:
    """sentence-transformers `CrossEncoder`; logits go through a sigmoid into [0, 1]."""

    def __init__(self, spec: BackendSpec, device: DeviceInfo):
        from sentence_transformers import CrossEncoder

        options = dict(spec.options)
        max_length = int(options.pop("max_length", 512))
        self.model = CrossEncoder(
            resolve_model_source(spec.model),
            device=device.torch_device,
            max_length=max_length,
            model_kwargs={"dtype": _torch_dtype(device)},
            **options,
        )
        self.max_seq_length = max_length
        self.tokenizer = self.model.tokenizer

    def count_tokens(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        queries, docs = zip(*pairs, strict=True)
        encoded = self.tokenizer(
            list(queries), list(docs), truncation="longest_first", max_length=self.max_seq_length
        )
        return [len(ids) for ids in encoded["input_ids"]]

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        import torch

        scores = self.model.predict(
            [list(p) for p in pairs],
            batch_size=max(1, len(pairs)),
            activation_fn=torch.nn.Sigmoid(),
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(scores, dtype=np.float32).reshape(-1)
