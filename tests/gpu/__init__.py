"""Tests on a Ray with logical GPUs (the gpu profile, multi-node). No physical GPU is needed."""

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
