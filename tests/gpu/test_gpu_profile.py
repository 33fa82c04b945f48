"""The gpu profile on a Ray started with logical GPUs (no physical GPU needed).

Tiny local models stand in for BGE-M3 and bge-reranker-v2-m3, so FlagEmbedding's code paths run for real; the
primary replicas ask for CUDA, find none, run on CPU and say so. Each role also has its CPU fallback deployment.

- embedder: the degraded-GPU check is turned off so the GPU deployment serves; it gets 0.3 s of injected
  latency per batch and a queue of 1, so a burst overflows to CPU; a file toggles injected failures.
- reranker: the default policy, so its degraded GPU deployment is skipped and the CPU deployment serves.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import numpy as np
import pytest

from tests.gpu import LLM_ON_CPU, SPEECH_AND_SAFETY_ON_CPU

pytestmark = pytest.mark.gpu_profile

GPU_RAY = {"num_cpus": 8, "num_gpus": 1}
TEXTS = ["Cells divide by mitosis.", "The Nile is a river in Africa.", "x"]


@pytest.fixture(scope="module")
def fail_file(tmp_path_factory):
    return tmp_path_factory.mktemp("faults") / "embedder-gpu-fails"


@pytest.fixture(scope="module")
def gpu_app(ray_serve, stores, tiny_models, tmp_path_factory, fail_file):
    from serve_app.app import AppArgs, build_app

    encoder, cross = str(tiny_models["encoder"]), str(tiny_models["cross_encoder"])
    missing = tmp_path_factory.mktemp("missing") / "bge-m3-not-downloaded"
    cpu_fallback = {"autoscaling": None, "num_replicas": 1, "num_cpus": 1, "torch_threads": 1}
    overrides = {
        **stores.overrides(),
        "storage": {"embedding_dimensions": 384},  # the session database was made for the cpu embedder
        "offline": True,
        "ingress": {"num_replicas": 1},
        "models": {
            "llm": LLM_ON_CPU,
            "translator": None,  # its opus-mt models are fetched on a connected cluster only
            **SPEECH_AND_SAFETY_ON_CPU,
            "embedder": {
                "routing": {"degraded_primary_is_unavailable": False, "breaker_failure_threshold": 3,
                            "breaker_reset_s": 2, "primary_timeout_s": 10},
                "primary": {
                    "chain": [
                        {"backend": "flag-embedding", "model": str(missing), "options": {"model_class": "m3"}},
                        {"backend": "flag-embedding", "model": encoder, "options": {"model_class": "m3"}},
                    ],
                    "autoscaling": None,
                    "num_replicas": 2,
                    "max_ongoing_requests": 1,
                    "max_queued_requests": 1,
                    "fault_injection": {"added_latency_s": 0.3, "fail_while_file_exists": str(fail_file)},
                },
                "fallback": {"chain": [{"backend": "sentence-transformers", "model": encoder}], **cpu_fallback},
            },
            "reranker": {
                "primary": {
                    "chain": [{"backend": "flag-reranker", "model": cross}],
                    "autoscaling": None,
                    "num_replicas": 2,
                },
                "fallback": {"chain": [{"backend": "cross-encoder", "model": cross}], **cpu_fallback},
            },
        },
    }
    return ray_serve.deploy("gpu", build_app(AppArgs(profile="gpu", overrides=overrides)), **GPU_RAY)


def role_status(http: httpx.Client, role: str) -> dict:
    return next(m for m in http.get("/v1/models").json()["data"] if m["role"] == role)["status"]


@pytest.fixture
def http(gpu_app, admin_key):
    with httpx.Client(base_url=gpu_app, timeout=60, headers={"Authorization": f"Bearer {admin_key}"}) as client:
        yield client


def replica_reports(http: httpx.Client, role: str, want: int) -> dict[str, dict]:
    """Status reports of distinct primary replicas of a role (each /v1/models call reaches one replica)."""
    reports: dict[str, dict] = {}
    for _ in range(200):
        status = role_status(http, role)["deployments"]["primary"]
        if status["ok"]:
            reports[status["replica"]] = status
        if len(reports) >= want:
            break
    return reports


def embed(http: httpx.Client, text: str) -> httpx.Response:
    response = http.post("/v1/embeddings", json={"input": text, "model": "bge-m3"})
    assert response.status_code == 200, response.text
    return response


def test_four_quarter_gpu_replicas_share_one_gpu(http):
    import ray

    assert ray.cluster_resources()["GPU"] == 1
    assert ray.available_resources().get("GPU", 0) == 0  # 2 embedder + 2 reranker replicas x 0.25
    for role in ("embedder", "reranker"):
        reports = replica_reports(http, role, want=2)
        assert len(reports) == 2
        for report in reports.values():
            assert report["gpu_ids"] == ["0"] and report["tier"] == "gpu"


def test_replicas_report_the_missing_cuda_and_the_fallback_they_loaded(http):
    status = next(iter(replica_reports(http, "embedder", want=1).values()))
    assert status["device"]["requested"] == "cuda" and status["device"]["kind"] == "cpu"
    assert "cuda requested" in status["device"]["degraded_reason"]
    assert status["routing_stats"]["device_degraded"] is True
    assert status["active"]["backend"] == "flag-embedding"
    assert status["active"]["model"].endswith("tiny-bge-m3")
    assert status["active"]["failed_before"][0]["model"].endswith("bge-m3-not-downloaded")


def test_flag_embedding_vectors_served_over_http(http, tiny_models):
    from FlagEmbedding import BGEM3FlagModel

    response = http.post("/v1/embeddings", json={"input": TEXTS, "model": "BAAI/bge-m3"})
    assert response.status_code == 200, response.text
    assert response.headers["x-eduserve-device"] in ("gpu", "cpu")
    served = np.array([d["embedding"] for d in response.json()["data"]])
    reference = BGEM3FlagModel(str(tiny_models["encoder"]), use_fp16=False, devices="cpu").encode(TEXTS)["dense_vecs"]
    assert np.min(np.sum(served * reference, axis=1)) >= 0.999
    assert response.json()["model"] == "bge-m3"


def test_cpu_fallback_embeds_into_the_same_vector_space(tiny_models):
    """The fallback loads the same weights with another library: vectors must not change with the tier."""
    from FlagEmbedding import BGEM3FlagModel
    from sentence_transformers import SentenceTransformer

    flag = BGEM3FlagModel(str(tiny_models["encoder"]), use_fp16=False, devices="cpu").encode(TEXTS)["dense_vecs"]
    st = SentenceTransformer(str(tiny_models["encoder"]), device="cpu").encode(TEXTS)
    assert np.min(np.sum(flag * st, axis=1)) >= 0.999


def test_a_burst_beyond_gpu_capacity_overflows_to_cpu_without_errors(http, gpu_app):
    async def burst():
        async with httpx.AsyncClient(base_url=gpu_app, timeout=120, headers=http.headers) as client:
            return await asyncio.gather(*(
                client.post("/v1/embeddings", json={"input": f"burst text {i}", "model": "bge-m3"}) for i in range(24)
            ))

    before = role_status(http, "embedder")["routing"]["counts"]
    responses = asyncio.run(burst())
    after = role_status(http, "embedder")["routing"]["counts"]
    assert [r.status_code for r in responses] == [200] * 24
    tiers = Counter(r.headers["x-eduserve-device"] for r in responses)
    assert tiers["gpu"] >= 1 and tiers["cpu"] >= 1, tiers
    assert after.get("saturated", 0) - before.get("saturated", 0) == tiers["cpu"]


def test_breaker_opens_on_gpu_failures_and_closes_when_it_heals(http, fail_file):
    assert embed(http, "warm").headers["x-eduserve-device"] == "gpu"
    fail_file.touch()
    try:
        tiers = [embed(http, f"while failing {i}").headers["x-eduserve-device"] for i in range(6)]
        status = role_status(http, "embedder")["routing"]
    finally:
        fail_file.unlink()
    assert tiers == ["cpu"] * 6  # every failure was absorbed by the fallback: no error reached the client
    assert status["breaker"] == "opened"
    assert status["counts"]["fault"] >= 3 and status["counts"]["breaker_open"] >= 1

    time.sleep(2.5)  # breaker_reset_s: the next call is a half-open probe to the (healed) GPU deployment
    assert embed(http, "healed").headers["x-eduserve-device"] == "gpu"
    assert role_status(http, "embedder")["routing"]["breaker"] == "closed"
    assert [embed(http, f"after {i}").headers["x-eduserve-device"] for i in range(3)] == ["gpu"] * 3


def test_a_primary_without_its_gpu_is_skipped_by_default(http, tiny_models):
    from FlagEmbedding import FlagReranker

    body = {"query": "rivers", "documents": TEXTS, "model": "bge-reranker-v2-m3"}
    assert http.post("/v1/rerank", json=body).status_code == 200  # triggers the primary's device probe
    deadline = time.monotonic() + 30
    while not role_status(http, "reranker")["routing"]["primary_degraded"]:
        assert time.monotonic() < deadline, "the router never learned that the GPU is missing"
        time.sleep(0.2)
    responses = [http.post("/v1/rerank", json=body) for _ in range(3)]
    counts = role_status(http, "reranker")["routing"]["counts"]
    assert [r.headers["x-eduserve-device"] for r in responses] == ["cpu"] * 3
    assert counts["primary_degraded"] >= 3
    served = {r["index"]: r["relevance_score"] for r in responses[-1].json()["results"]}
    reference = FlagReranker(str(tiny_models["cross_encoder"]), use_fp16=False, devices="cpu").compute_score(
        [("rivers", t) for t in TEXTS], normalize=True
    )
    np.testing.assert_allclose([served[i] for i in range(len(TEXTS))], reference, atol=1e-5)


def test_readiness_and_models_report_both_tiers(http):
    checks = http.get("/readyz").json()["checks"]
    embedder = role_status(http, "embedder")
    assert checks["embedder"] == {"ok": True, "primary": True, "fallback": True}
    assert embedder["routing"]["primary"] == "EmbedderGPU" and embedder["routing"]["fallback"] == "EmbedderCPU"
    assert embedder["deployments"]["fallback"]["tier"] == "cpu"
    assert embedder["deployments"]["fallback"]["device"]["degraded_reason"] is None
