"""Backend names a profile may use, per role. Loaders import their libraries lazily."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deployments.common import DeviceInfo
from deployments.spec import BackendSpec

Factory = Callable[[BackendSpec, DeviceInfo], Any]


def _sentence_transformers(spec: BackendSpec, device: DeviceInfo):
    from deployments.backends.sentence_transformers_backend import SentenceTransformerEmbedding

    return SentenceTransformerEmbedding(spec, device)


def _flag_embedding(spec: BackendSpec, device: DeviceInfo):
    from deployments.backends.flag_embedding_backend import FlagEmbeddingBackend

    return FlagEmbeddingBackend(spec, device)


def _onnx_embedding(spec: BackendSpec, device: DeviceInfo):
    from deployments.backends.onnx_backend import OnnxEmbedding

    return OnnxEmbedding(spec, device)


def _cross_encoder(spec: BackendSpec, device: DeviceInfo):
    from deployments.backends.sentence_transformers_backend import CrossEncoderRerank

    return CrossEncoderRerank(spec, device)


def _flag_reranker(spec: BackendSpec, device: DeviceInfo):
    from deployments.backends.flag_embedding_backend import FlagRerankBackend

    return FlagRerankBackend(spec, device)


def _bi_encoder(spec: BackendSpec, device: DeviceInfo):
    from deployments.backends.bi_encoder_backend import BiEncoderRerank

    return BiEncoderRerank(spec, device)


def _ctranslate2(spec: BackendSpec, device: DeviceInfo):
    from deployments.backends.ctranslate2_backend import CTranslate2LLM

    return CTranslate2LLM(spec, device)


def _transformers_llm(spec: BackendSpec, device: DeviceInfo):
    from deployments.backends.transformers_llm_backend import TransformersLLM

    return TransformersLLM(spec, device)


def _vllm(spec: BackendSpec, device: DeviceInfo):
    from deployments.backends.vllm_backend import VLLMBackend

    return VLLMBackend(spec, device)


def _safety_classic(spec: BackendSpec, device: DeviceInfo):
    from deployments.backends.safety_backends import classic

    return classic(spec, device)


def _safety_transformers(spec: BackendSpec, device: DeviceInfo):
    from deployments.backends.safety_backends import transformers_safety

    return transformers_safety(spec, device)


def _hibari(spec: BackendSpec, device: DeviceInfo):
    from deployments.backends.tts_backends import HibariTTS

    return HibariTTS(spec, device)


def _transformers_tts(spec: BackendSpec, device: DeviceInfo):
    from deployments.backends.tts_backends import TransformersTTS

    return TransformersTTS(spec, device)


def _ct2_translation(spec: BackendSpec, device: DeviceInfo):
    from deployments.backends.translation_backend import CTranslate2Translation

    return CTranslate2Translation(spec, device)


def _lora(spec: BackendSpec, device: DeviceInfo):
    """A LoRA adapter's description; the LLM deployment hands it to its (vLLM) engine."""
    from deployments.backends.llm_base import LoRAAdapter

    return LoRAAdapter(spec.model, dict(spec.options))


EMBEDDING_BACKENDS: dict[str, Factory] = {
    "sentence-transformers": _sentence_transformers,
    "flag-embedding": _flag_embedding,
    "onnx": _onnx_embedding,
}

RERANK_BACKENDS: dict[str, Factory] = {
    "bi-encoder": _bi_encoder,
    "cross-encoder": _cross_encoder,
    "flag-reranker": _flag_reranker,
}

LLM_BACKENDS: dict[str, Factory] = {
    "vllm": _vllm,
    "ctranslate2": _ctranslate2,
    "transformers": _transformers_llm,
    "lora": _lora,
}

TRANSLATION_BACKENDS: dict[str, Factory] = {
    "ctranslate2": _ct2_translation,
}

SAFETY_BACKENDS: dict[str, Factory] = {
    "classic": _safety_classic,
    "transformers": _safety_transformers,
}

TTS_BACKENDS: dict[str, Factory] = {
    "hibari": _hibari,
    "transformers": _transformers_tts,
}

BACKENDS_BY_ROLE: dict[str, dict[str, Factory]] = {
    "embedder": EMBEDDING_BACKENDS,
    "reranker": RERANK_BACKENDS,
    "llm": LLM_BACKENDS,
    "safety": SAFETY_BACKENDS,
    "tts": TTS_BACKENDS,
    "translator": TRANSLATION_BACKENDS,
}
