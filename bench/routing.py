"""Device-aware routing under a burst that saturates the GPU deployment, and the router's own cost.

Runs the gpu profile on a Ray with one logical GPU (tiny local models, as in the tests). The GPU deployment is
given a fixed capacity (2 replicas, 2 ongoing + 4 queued each, 50 ms injected per batch) so a burst of 64
concurrent clients overflows it; the CPU fallback takes the rest.

Reports, for the same burst against the GPU deployment alone (baseline) and with the CPU fallback behind it:
requests served, share per tier, p50/p99 latency, 5xx count; then the router's added latency per call
(ModelRouter.call vs the same DeploymentHandle called directly, sequentially, same process).

Usage: .venv/bin/python bench/routing.py [--seconds 15] [--clients 64]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stack import percentile  # noqa: E402


async def burst(url: str, clients: int, seconds: float, headers: dict[str, str]) -> dict:
    latencies: list[float] = []
    tiers: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    deadline = time.perf_counter() + seconds

    async def client(index: int, http: httpx.AsyncClient) -> None:
        i = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            response = await http.post("/v1/embeddings", json={"input": f"client {index} text {i}"})
            latencies.append(time.perf_counter() - t0)
            statuses[response.status_code] += 1
            tiers[response.headers.get("x-eduserve-device", "none")] += 1
            i += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits, headers=headers) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        elapsed = time.perf_counter() - started
    total = sum(statuses.values())
    return {
        "requests": total,
        "requests_per_s": total / elapsed,
        "share_by_tier": {tier: round(n / total, 3) for tier, n in tiers.items()},
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "status_codes": dict(statuses),
        "5xx": sum(n for code, n in statuses.items() if code >= 500),
    }


async def router_overhead(calls: int) -> dict:
    from ray import serve

    from serve_app.routing import ModelRouter, Target, make_breakers
    from serve_app.settings import load_settings

    # The reranker's GPU deployment has no injected latency: the difference is the router's own work.
    role = load_settings("gpu").models.reranker
    primary = serve.get_deployment_handle(role.primary.name, "eduserve")
    fallback = serve.get_deployment_handle(role.fallback.name, "eduserve")
    policy = role.routing.model_copy(update={"degraded_primary_is_unavailable": False})
    router = ModelRouter("reranker", Target(role.primary, primary), Target(role.fallback, fallback), policy, 30.0,
                         make_breakers())
    docs = ["a short document", "another one"]
    direct, routed = [], []
    for i in range(20):  # warm both paths
        await primary.rerank.remote(f"warm {i}", docs)
        await router.call("rerank", f"warm {i}", docs)
    for i in range(calls):
        t0 = time.perf_counter()
        await primary.rerank.remote(f"direct {i}", docs)
        direct.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await router.call("rerank", f"routed {i}", docs)
        routed.append(time.perf_counter() - t0)
    return {
        "calls": calls,
        "direct_p50_ms": 1000 * statistics.median(direct),
        "routed_p50_ms": 1000 * statistics.median(routed),
        "added_p50_ms": 1000 * (statistics.median(routed) - statistics.median(direct)),
        "direct_p99_ms": 1000 * percentile(direct, 0.99),
        "routed_p99_ms": 1000 * percentile(routed, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "routing.json"))
    args = parser.parse_args()

    import ray
    from ray import serve

    from bench._stack import local_stack, write_results
    from serve_app.app import AppArgs, build_app
    from serve_app.settings import load_settings
    from tests.support.tiny_models import build_tiny_cross_encoder, build_tiny_encoder

    root = Path(tempfile.mkdtemp(prefix="eduserve-bench-"))
    encoder, cross = str(build_tiny_encoder(root / "enc")), str(build_tiny_cross_encoder(root / "ce"))
    fixed = {"autoscaling": None, "num_cpus": 0.5, "torch_threads": 1}
    models = {
        "embedder": {
            "routing": {"degraded_primary_is_unavailable": False},
            "primary": {**fixed, "chain": [{"backend": "flag-embedding", "model": encoder}], "num_replicas": 2,
                        "max_ongoing_requests": 2, "max_queued_requests": 4,
                        "fault_injection": {"added_latency_s": 0.05}},
            "fallback": {**fixed, "chain": [{"backend": "sentence-transformers", "model": encoder}],
                         "num_replicas": 1},
        },
        "reranker": {
            "primary": {**fixed, "chain": [{"backend": "flag-reranker", "model": cross}], "num_replicas": 1},
            "fallback": {**fixed, "chain": [{"backend": "cross-encoder", "model": cross}], "num_replicas": 1},
        },
    }
    # The other roles run as on the cpu profile (CPU, packaged models): this benchmark is about the embedder.
    cpu_roles = {role: {**config.model_dump(mode="json"), "fallback": None}
                 for role, config in load_settings("cpu").models.roles().items() if role in ("llm", "tts", "safety")}
    models = {**models, **cpu_roles, "translator": None}
    # Baseline first: the same GPU deployment with no CPU fallback behind it.
    runs = {
        "burst_gpu_only": {**models, "embedder": {**models["embedder"], "fallback": None}},
        "burst_with_cpu_fallback": models,
    }
    port = 8790
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "clients": args.clients, "seconds": args.seconds}
    with local_stack("gpu") as (stack, headers):
        ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            for label, run_models in runs.items():
                overrides = {**stack, "offline": True, "ingress": {"num_replicas": 1, "num_cpus": 0.5},
                             "models": run_models}
                serve.run(build_app(AppArgs(profile="gpu", overrides=overrides)), name="eduserve", route_prefix="/")
                print(f"{label}: {args.clients} clients for {args.seconds:.0f}s ...", flush=True)
                results[label] = asyncio.run(burst(f"http://127.0.0.1:{port}", args.clients, args.seconds, headers))
            print("router overhead ...", flush=True)
            results["router_overhead"] = asyncio.run(router_overhead(args.calls))
        finally:
            serve.shutdown()
            ray.shutdown()
    served = {label: results[label]["status_codes"].get(200, 0) for label in runs}
    results["ratio_served_with_fallback_vs_gpu_only"] = served["burst_with_cpu_fallback"] / max(1, served["burst_gpu_only"])
    write_results(results, args.out)


if __name__ == "__main__":
    main()
