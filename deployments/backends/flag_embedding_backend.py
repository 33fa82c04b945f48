"""FlagEmbedding backends: BGE-M3 / BGE dense embeddings and the BGE cross-encoder reranker (gpu profile).

FlagEmbedding loads the model (its model classes, pooling, M3 heads); the forward pass is ours. Its own
`encode` runs the first batch twice to probe for a batch size and retries forever on any RuntimeError, which
a server must not do: our batches are already bounded by the deployment's token budget.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deployments.common import DeviceInfo, resolve_model_source
from deployments.spec import BackendSpec


def _half(device: DeviceInfo) -> dict[str, bool]:
    return {"use_fp16": device.dtype == "float16", "use_bf16": device.dtype == "bfloat16"}


def _on_device(model, device: DeviceInfo):
    """The model on the replica's device in its dtype. FlagEmbedding casts to half precision only inside its own
    `encode`/`compute_score`, which we bypass, so `use_fp16` alone would leave the weights in fp32."""
    import torch

    return model.to(device.torch_device, dtype=getattr(torch, device.dtype)).eval()


class FlagEmbeddingBackend:
    """Dense vectors from `BGEM3FlagModel` (model_class: m3, the default) or `FlagModel` (model_class: base)."""

    def __init__(self, spec: BackendSpec, device: DeviceInfo):
        import torch
        from FlagEmbedding import BGEM3FlagModel, FlagModel

        options = dict(spec.options)
        model_class = options.pop("model_class", "m3")
        self.max_seq_length = int(options.pop("max_length", 512))
        pooling = options.pop("pooling_method", "cls")
        common = {
            "normalize_embeddings": True,
            "devices": device.torch_device,
            "pooling_method": pooling,
            **_half(device),
            **options,
        }
        source = resolve_model_source(spec.model)
        if model_class == "m3":
            self._flag = BGEM3FlagModel(source, **common)
        elif model_class == "base":
            self._flag = FlagModel(source, **common)
        else:
            raise ValueError(f"model_class must be 'm3' or 'base', not {model_class!r}")
        self._m3 = model_class == "m3"
        self._device = device.torch_device
        self.tokenizer = self._flag.tokenizer
        self._model = _on_device(self._flag.model, device)
        self._torch = torch
        self.dimensions = int(self._encoder().config.hidden_size)

    def _encoder(self):
        return self._model.model if self._m3 else self._model

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_seq_length)
        return [len(ids) for ids in encoded["input_ids"]]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        inputs = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="pt"
        ).to(self._device)
        with torch.inference_mode():
            if self._m3:
                vectors = self._model(text_input=dict(inputs), return_dense=True)["dense_vecs"]
            else:
                hidden = self._model(**inputs, return_dict=True).last_hidden_state
                vectors = self._flag.pooling(hidden, inputs["attention_mask"])
            vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)
        return vectors.cpu().numpy().astype(np.float32, copy=False)


class FlagRerankBackend:
    """`FlagReranker` (e.g. BAAI/bge-reranker-v2-m3): one logit per pair, sigmoid into [0, 1]."""

    def __init__(self, spec: BackendSpec, device: DeviceInfo):
        import torch
        from FlagEmbedding import FlagReranker

        options = dict(spec.options)
        self.max_seq_length = int(options.pop("max_length", 512))
        # Kept for the backend's lifetime: FlagEmbedding's wrappers move their model to the CPU when collected.
        self._flag = FlagReranker(
            resolve_model_source(spec.model),
            devices=device.torch_device,
            use_fp16=device.dtype == "float16",
            use_bf16=device.dtype == "bfloat16",
            max_length=self.max_seq_length,
            **options,
        )
        self.tokenizer = self._flag.tokenizer
        self._model = _on_device(self._flag.model, device)
        self._device = device.torch_device
        self._torch = torch

    def _encode_pairs(self, pairs: Sequence[tuple[str, str]], **kwargs):
        queries, docs = zip(*pairs, strict=True)
        return self.tokenizer(
            list(queries), list(docs), truncation="longest_first", max_length=self.max_seq_length, **kwargs
        )

    def count_tokens(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        return [len(ids) for ids in self._encode_pairs(pairs)["input_ids"]]

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        torch = self._torch
        inputs = self._encode_pairs(pairs, padding=True, return_tensors="pt").to(self._device)
        with torch.inference_mode():
            logits = self._model(**inputs, return_dict=True).logits.view(-1).float()
        return torch.sigmoid(logits).cpu().numpy().astype(np.float32, copy=False)
