"""Scale-out on a multi-node Ray (`ray.cluster_utils.Cluster`): a CPU head plus a worker with a logical GPU.

GPU deployments must land on the GPU node (four 0.25-GPU replicas packed onto its one GPU), CPU deployments and
the ingress on the head, and requests must flow across nodes.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.gpu import gpu_profile_models, replica_nodes

pytestmark = pytest.mark.gpu_profile

CLUSTER = {"nodes": [{"num_cpus": 4}, {"num_cpus": 4, "num_gpus": 1}]}


@pytest.fixture(scope="module")
def cluster_app(ray_serve, stores, tiny_models):
    from serve_app.app import AppArgs, build_app

    gpu = {"autoscaling": None, "num_replicas": 2, "num_cpus": 1}
    cpu = {"autoscaling": None, "num_replicas": 1, "num_cpus": 1, "torch_threads": 1}
    overrides = {
        **stores.overrides(),
        "storage": {"embedding_dimensions": 384},  # the session database was made for the cpu embedder
        "offline": True,
        "ingress": {"num_replicas": 1, "num_cpus": 1},
        "models": gpu_profile_models(tiny_models, gpu, cpu),
    }
    return ray_serve.deploy("multinode", build_app(AppArgs(profile="gpu", overrides=overrides)), **CLUSTER)


def test_gpu_deployments_on_the_gpu_node_cpu_deployments_on_the_head(cluster_app):
    import ray

    by_gpu = {node["NodeID"]: node["Resources"].get("GPU", 0) for node in ray.nodes() if node["Alive"]}
    gpu_node = next(node for node, gpus in by_gpu.items() if gpus)
    head = next(node for node, gpus in by_gpu.items() if not gpus)
    placement = replica_nodes()
    assert placement["EmbedderGPU"] == {gpu_node} and placement["RerankerGPU"] == {gpu_node}
    assert placement["EmbedderCPU"] == {head} and placement["RerankerCPU"] == {head}
    assert placement["Ingress"] == {head}
    assert ray.available_resources().get("GPU", 0) == 0  # four 0.25-GPU replicas fill the one GPU


def test_requests_cross_nodes(cluster_app, admin_key, tiny_models):
    from FlagEmbedding import BGEM3FlagModel

    texts = ["a sentence on the head node", "served from the GPU node"]
    auth = {"Authorization": f"Bearer {admin_key}"}
    response = httpx.post(f"{cluster_app}/v1/embeddings", json={"input": texts}, headers=auth, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["x-eduserve-device"] == "gpu"
    served = np.array([d["embedding"] for d in response.json()["data"]])
    reference = BGEM3FlagModel(str(tiny_models["encoder"]), use_fp16=False, devices="cpu").encode(texts)["dense_vecs"]
    assert np.min(np.sum(served * reference, axis=1)) >= 0.999
    rerank = httpx.post(f"{cluster_app}/v1/rerank", json={"query": "q", "documents": texts}, headers=auth, timeout=60)
    assert rerank.status_code == 200 and rerank.headers["x-eduserve-device"] == "gpu"


def test_the_proxy_error_page_is_written_on_every_node(cluster_app, tmp_path):
    """HAProxy runs on every node (proxy_location EveryNode), so a node with no ingress replica needs eduserve's
    page too (else Ray's bare 500): a zero-CPU task pinned to each other node writes it there. (This cluster runs
    Serve's own proxies, several HAProxies cannot share one host's ports, so the folder is given here.)"""
    import ray

    from serve_app.proxy_error_page import error_page, install_error_page_on_every_node

    nodes = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    assert len(nodes) == 2
    assert install_error_page_on_every_node(folder=tmp_path, wait_s=60) == nodes
    pages = list(tmp_path.glob("*/500.http"))
    assert {page.parent.name for page in pages} == nodes
    assert all(page.read_bytes() == error_page() for page in pages)
