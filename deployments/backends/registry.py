"""Backend names a profile may use, per role, each a `module:callable` under `deployments.backends`, imported on
first use: a replica loads only the library of the backend it runs (no torch in a replica that runs ONNX)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deployments.common import DeviceInfo
from deployments.spec import BackendSpec

Factory = Callable[[BackendSpec, DeviceInfo], Any]


@dataclass(frozen=True)
class Lazy:
    """A backend factory named `module:callable`; called as `factory(spec, device)`."""

    target: str

    def __call__(self, spec: BackendSpec, device: DeviceInfo) -> Any:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(f"deployments.backends.{module}"), name)(spec, device)


EMBEDDING_BACKENDS: dict[str, Factory] = {
    "sentence-transformers": Lazy("sentence_transformers_backend:SentenceTransformerEmbedding"),
    "flag-embedding": Lazy("flag_embedding_backend:FlagEmbeddingBackend"),
    "onnx": Lazy("onnx_backend:OnnxEmbedding"),
    "openvino": Lazy("onnx_backend:OpenVinoEmbedding"),
}

RERANK_BACKENDS: dict[str, Factory] = {
    "bi-encoder": Lazy("bi_encoder_backend:BiEncoderRerank"),
    "cross-encoder": Lazy("sentence_transformers_backend:CrossEncoderRerank"),
    "flag-reranker": Lazy("flag_embedding_backend:FlagRerankBackend"),
}

LLM_BACKENDS: dict[str, Factory] = {
    "vllm": Lazy("vllm_backend:VLLMBackend"),
    "ctranslate2": Lazy("ctranslate2_backend:CTranslate2LLM"),
    "transformers": Lazy("transformers_llm_backend:TransformersLLM"),
    "lora": Lazy("llm_base:lora_adapter"),  # the adapter's description; the LLM hands it to its (vLLM) engine
}

TRANSLATION_BACKENDS: dict[str, Factory] = {
    "ctranslate2": Lazy("translation_backend:CTranslate2Translation"),
}

SAFETY_BACKENDS: dict[str, Factory] = {
    "classic": Lazy("safety_backends:classic"),
    "transformers": Lazy("safety_backends:transformers_safety"),
}

TTS_BACKENDS: dict[str, Factory] = {
    "hibari": Lazy("tts_backends:HibariTTS"),
    "transformers": Lazy("tts_backends:TransformersTTS"),
}
