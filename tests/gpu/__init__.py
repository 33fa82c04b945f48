"""Tests on a Ray with logical GPUs (the gpu profile, multi-node). No physical GPU is needed."""

from pathlib import Path
from typing import Any

# The gpu profile's LLM is vLLM on a whole GPU; the logical GPU here is kept for the four 0.25-GPU
# embedder/reranker replicas under test, so the LLM runs on CPU with CTranslate2 (the vLLM engine and its OpenAI
# layer are tested for real in the cpu app, tests/serve_app/api/test_chat_completions.py).
LLM_ON_CPU = {
    "primary": {
        "device": "cpu", "num_gpus": 0, "num_cpus": 0.5, "autoscaling": None, "num_replicas": 1,
        "request_router": None, "max_queued_requests": -1,
        "chain": [{"backend": "ctranslate2", "model": "prepared:smollm2-135m-instruct/ct2-int8",
                   "options": {"context_length": 8192}}],
    },
    "fallback": None,
}

# TTS and safety on CPU (the packaged voice, the classic checks) for the same reason.
SPEECH_AND_SAFETY_ON_CPU = {
    "tts": {
        "primary": {"device": "cpu", "num_gpus": 0, "num_cpus": 0.1, "autoscaling": None, "num_replicas": 1,
                    "max_queued_requests": -1, "chain": [{"backend": "hibari", "model": "package:hibari"}]},
        "fallback": None,
    },
    "safety": {
        "primary": {"device": "cpu", "num_gpus": 0, "num_cpus": 0.1, "autoscaling": None, "num_replicas": 1,
                    "max_queued_requests": -1,
                    "chain": [{"backend": "classic", "model": "prepared:jailguard-minilm/onnx"}]},
        "fallback": None,
    },
}


def gpu_profile_models(tiny_models: dict[str, Path], gpu: dict[str, Any], cpu: dict[str, Any]) -> dict[str, Any]:
    """The gpu profile's models with what this host can load: tiny BGE-style models on the GPU deployments (`gpu`
    options) and their CPU fallbacks (`cpu` options), the LLM, speech and safety on CPU, no translator (its
    opus-mt models are fetched on a connected cluster only).

    A logical GPU has no CUDA behind it, so each GPU replica reports itself degraded (running on CPU) and the
    router would send everything to the CPU deployments: these stand for healthy GPUs."""
    encoder, cross = str(tiny_models["encoder"]), str(tiny_models["cross_encoder"])
    return {
        "llm": LLM_ON_CPU,
        "translator": None,
        **SPEECH_AND_SAFETY_ON_CPU,
        "embedder": {
            "routing": {"degraded_primary_is_unavailable": False},
            "primary": {"chain": [{"backend": "flag-embedding", "model": encoder}], **gpu},
            "fallback": {"chain": [{"backend": "sentence-transformers", "model": encoder}], **cpu},
        },
        "reranker": {
            "routing": {"degraded_primary_is_unavailable": False},
            "primary": {"chain": [{"backend": "flag-reranker", "model": cross}], **gpu},
            "fallback": {"chain": [{"backend": "cross-encoder", "model": cross}], **cpu},
        },
    }


def replica_nodes(app: str = "eduserve") -> dict[str, set[str]]:
    """The app's live Serve replicas: deployment name → the ids of the nodes they run on."""
    from collections import defaultdict

    from ray.util.state import list_actors

    nodes: dict[str, set[str]] = defaultdict(set)
    for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=1000):
        name = actor.name or ""
        if name.startswith(f"SERVE_REPLICA::{app}#"):
            nodes[name.split("#")[1]].add(actor.node_id)
    return nodes
