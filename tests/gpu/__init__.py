"""Tests on a Ray with logical GPUs (the gpu profile, multi-node). No physical GPU is needed."""

# The gpu profile's LLM is vLLM on a whole GPU; here it runs the real vLLM adapter on the test double engine,
# on CPU, so the logical GPU stays for the four 0.25-GPU embedder/reranker replicas under test.
LLM_ON_FAKE_VLLM = {
    "primary": {
        "device": "cpu", "num_gpus": 0, "num_cpus": 0.5, "autoscaling": None, "num_replicas": 1,
        "request_router": None, "max_queued_requests": -1,
        "chain": [{"backend": "vllm", "model": "prepared:smollm2-135m-instruct/hf",
                   "options": {"engine_module": "tests.support.fake_vllm", "max_model_len": 4096,
                               "enable_lora": True}}],
        # a LoRA adapter served by the same engine, chosen by model name (multiplexed id)
        "multiplex": {"max_models_per_replica": 2,
                      "models": {"lora-algebra": [{"backend": "lora", "model": "/adapters/algebra"}]}},
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
