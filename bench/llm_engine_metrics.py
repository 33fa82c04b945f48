"""What exporting vLLM's engine metrics costs: AsyncLLM decode throughput with `RayPrometheusStatLogger` (what
the LLM replica passes, so vLLM's time to first token, inter-token latency, tokens and KV cache use reach Ray's
metrics) vs no stat logger (the cpu profile's `disable_log_stats`), on the cpu profile's engine options, in this
process with Ray initialised. One engine per process run; run both modes alternately and compare within one run.

Usage: .venv/bin/python bench/llm_engine_metrics.py stats|none [--clients 8] [--tokens 96] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # as the cpu profile's LLM replica sets it


def make_engine(with_stats: bool):
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

    from deployments.backends.vllm_backend import engine_arguments
    from deployments.common import resolve_model_source
    from serve_app.settings import load_settings

    settings = load_settings("cpu")
    entry = settings.models.llm.primary.chain[0]
    args = engine_arguments(resolve_model_source(entry.model, settings.prepared_models_dir), dict(entry.options))
    return AsyncLLM.from_engine_args(AsyncEngineArgs.from_cli_args(args),
                                     stat_loggers=[RayPrometheusStatLogger] if with_stats else None)


async def decode_rates(engine, clients: int, tokens: int, rounds: int) -> list[float]:
    """Generated tokens per second of `clients` concurrent greedy requests of `tokens` each, per round."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)

    async def one(index: int, tag: str) -> int:
        generated = 0
        async for output in engine.generate(f"Tell me about planet number {index}.", params,
                                            request_id=f"{tag}-{index}"):
            generated = len(output.outputs[0].token_ids)  # cumulative
        return generated

    await asyncio.gather(*(one(i, "warm-up") for i in range(2)))
    rates = []
    for round_ in range(rounds):
        started = time.perf_counter()
        counts = await asyncio.gather(*(one(i, str(round_)) for i in range(clients)))
        rates.append(sum(counts) / (time.perf_counter() - started))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["stats", "none"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    engine = make_engine(args.mode == "stats")
    try:
        rates = asyncio.run(decode_rates(engine, args.clients, args.tokens, args.rounds))
        print(args.mode, "tokens/s per round:", [round(rate, 1) for rate in rates], flush=True)
    finally:
        engine.shutdown()
        ray.shutdown()


if __name__ == "__main__":  # vLLM's engine process is spawned: it must not re-run this
    main()
