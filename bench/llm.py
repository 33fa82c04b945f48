"""LLM decode speed (CTranslate2 int8 vs transformers fp32, same model, same process) and time to first token
through HTTP at 1 and 8 concurrent streams.

Usage: .venv/bin/python bench/llm.py [--tokens 128] [--rounds 3] [--streams-per-level 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MESSAGES = [
    {"role": "system", "content": "You are a patient tutor for school students."},
    {"role": "user", "content": "Explain how plants make their food, step by step."},
]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[round(q * (len(values) - 1))]


async def decode_speed(tokens: int, rounds: int, threads: int) -> dict:
    """Tokens per second of greedy decoding with a fixed length (EOS ignored by asking for exactly `tokens`)."""
    import torch

    from deployments.backends.llm_base import SamplingParams
    from deployments.backends.registry import LLM_BACKENDS
    from deployments.common import load_chain, select_device
    from deployments.llm_text import fit_history
    from deployments.spec import BackendSpec
    from serve_app.settings import load_settings

    torch.set_num_threads(threads)
    models_dir = load_settings("cpu").prepared_models_dir
    results = {}
    for backend, variant in (("transformers", "hf"), ("ctranslate2", "ct2-int8")):
        spec = BackendSpec(backend=backend, model=f"prepared:smollm2-135m-instruct/{variant}",
                           options={"context_length": 8192, **({"intra_threads": threads, "inter_threads": 1} if backend == "ctranslate2" else {})})
        llm = load_chain([spec], LLM_BACKENDS, select_device("cpu"), models_dir).backend
        prompt = fit_history(llm.tokenizer, MESSAGES, None, 8192, tokens)[1]
        params = SamplingParams(max_tokens=tokens, temperature=0.0)
        await llm.generate([prompt], [params])  # warm-up
        speeds = []
        for _ in range(rounds):
            started = time.perf_counter()
            (ids,) = await llm.generate([prompt], [params])
            speeds.append(len(ids) / (time.perf_counter() - started))
        results[backend] = {"tokens_per_s": statistics.median(speeds), "runs": [round(s, 1) for s in speeds],
                            "generated": len(ids)}
    results["ratio_ct2_int8_vs_transformers_fp32"] = (
        results["ctranslate2"]["tokens_per_s"] / results["transformers"]["tokens_per_s"]
    )
    return results


async def ttft(url: str, headers: dict, concurrency: int, total: int) -> dict:
    """Time from sending a streamed chat request to its first content token, `concurrency` at a time."""
    samples: list[float] = []
    semaphore = asyncio.Semaphore(concurrency)

    async def one(http: httpx.AsyncClient, i: int) -> None:
        async with semaphore:
            body = {"messages": MESSAGES + [{"role": "user", "content": f"(question {i})"}],
                    "max_tokens": 32, "temperature": 0, "stream": True}
            started = time.perf_counter()
            first = None
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                async for line in response.aiter_lines():  # read to the end, so the stream completes normally
                    if first is None and line.startswith("data: {"):
                        chunk = json.loads(line[6:])
                        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                            first = time.perf_counter() - started
            samples.append(first)

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as http:
        await one(http, -1)  # warm-up
        samples.clear()
        await asyncio.gather(*(one(http, i) for i in range(total)))
    return {"streams": len(samples), "p50_ms": 1000 * statistics.median(samples),
            "p99_ms": 1000 * percentile(samples, 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams-per-level", type=int, default=16)
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "llm.json"))
    args = parser.parse_args()

    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "tokens": args.tokens}
    print("decode speed (in process) ...", flush=True)
    for threads in (1, 2):  # CTranslate2 on a tiny model is much faster single-threaded: show both
        results[f"decode_{threads}_thread"] = asyncio.run(decode_speed(args.tokens, args.rounds, threads))

    import ray
    from ray import serve

    from bench._stack import local_stack, write_results
    from serve_app.app import AppArgs, build_app

    with local_stack() as (stack, headers):
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": 8791})
        try:
            serve.run(build_app(AppArgs(profile="cpu", overrides=stack)), name="eduserve", route_prefix="/")
            for concurrency in (1, 8):
                print(f"time to first token, {concurrency} concurrent stream(s) ...", flush=True)
                results[f"ttft_{concurrency}_streams"] = asyncio.run(
                    ttft("http://127.0.0.1:8791", headers, concurrency, args.streams_per_level)
                )
        finally:
            serve.shutdown()
            ray.shutdown()
    write_results(results, args.out)


if __name__ == "__main__":
    main()
