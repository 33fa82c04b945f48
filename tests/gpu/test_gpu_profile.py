"""The gpu profile on a Ray started with logical GPUs (no physical GPU needed).

Tiny local models stand in for BGE-M3 and bge-reranker-v2-m3, so FlagEmbedding's code paths run for real; the
replicas ask for CUDA, find none, run on CPU and say so.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.gpu_profile

GPU_RAY = {"num_cpus": 8, "num_gpus": 1}
TEXTS = ["Cells divide by mitosis.", "The Nile is a river in Africa.", "x"]


@pytest.fixture(scope="module")
def gpu_app(ray_serve, tiny_models, tmp_path_factory):
    from serve_app.app import AppArgs, build_app

    missing = tmp_path_factory.mktemp("missing") / "bge-m3-not-downloaded"
    overrides = {
        "offline": True,
        "models": {
            "embedder": {"primary": {
                "chain": [
                    {"backend": "flag-embedding", "model": str(missing), "options": {"model_class": "m3"}},
                    {"backend": "flag-embedding", "model": str(tiny_models["encoder"]), "options": {"model_class": "m3"}},
                ],
                "autoscaling": None,
                "num_replicas": 2,
            }},
            "reranker": {"primary": {
                "chain": [{"backend": "flag-reranker", "model": str(tiny_models["cross_encoder"])}],
                "autoscaling": None,
                "num_replicas": 2,
            }},
        },
    }
    return ray_serve.deploy("gpu", build_app(AppArgs(profile="gpu", overrides=overrides)), **GPU_RAY)


def replica_reports(base_url: str, role: str, want: int) -> dict[str, dict]:
    """Status reports of distinct replicas of a role (each /v1/models call reaches one replica)."""
    reports: dict[str, dict] = {}
    with httpx.Client(base_url=base_url, timeout=60) as http:
        for _ in range(200):
            status = next(m for m in http.get("/v1/models").json()["data"] if m["role"] == role)["status"]
            reports[status["replica"]] = status
            if len(reports) >= want:
                break
    return reports


def test_four_quarter_gpu_replicas_share_one_gpu(gpu_app):
    import ray

    assert ray.cluster_resources()["GPU"] == 1
    assert ray.available_resources().get("GPU", 0) == 0  # 2 embedder + 2 reranker replicas x 0.25
    for role in ("embedder", "reranker"):
        reports = replica_reports(gpu_app, role, want=2)
        assert len(reports) == 2
        for report in reports.values():
            assert report["gpu_ids"] == ["0"]


def test_replicas_report_the_missing_cuda_and_the_fallback_they_loaded(gpu_app):
    status = next(iter(replica_reports(gpu_app, "embedder", want=1).values()))
    assert status["device"]["requested"] == "cuda" and status["device"]["kind"] == "cpu"
    assert "cuda requested" in status["device"]["degraded_reason"]
    assert status["active"]["backend"] == "flag-embedding"
    assert status["active"]["model"].endswith("tiny-bge-m3")
    assert status["active"]["failed_before"][0]["model"].endswith("bge-m3-not-downloaded")


def test_flag_embedding_vectors_served_over_http(gpu_app, tiny_models):
    from FlagEmbedding import BGEM3FlagModel

    response = httpx.post(f"{gpu_app}/v1/embeddings", json={"input": TEXTS, "model": "BAAI/bge-m3"}, timeout=60)
    assert response.status_code == 200, response.text
    served = np.array([d["embedding"] for d in response.json()["data"]])
    reference = BGEM3FlagModel(str(tiny_models["encoder"]), use_fp16=False, devices="cpu").encode(TEXTS)["dense_vecs"]
    assert np.min(np.sum(served * reference, axis=1)) >= 0.999
    assert response.json()["model"] == "bge-m3"


def test_flag_reranker_scores_served_over_http(gpu_app, tiny_models):
    from FlagEmbedding import FlagReranker

    response = httpx.post(
        f"{gpu_app}/v1/rerank", json={"query": "rivers", "documents": TEXTS, "model": "bge-reranker-v2-m3"}, timeout=60
    )
    assert response.status_code == 200, response.text
    served = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
    reference = FlagReranker(str(tiny_models["cross_encoder"]), use_fp16=False, devices="cpu").compute_score(
        [("rivers", t) for t in TEXTS], normalize=True
    )
    np.testing.assert_allclose([served[i] for i in range(len(TEXTS))], reference, atol=1e-5)
