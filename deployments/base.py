"""The part every model replica shares: load on start, batch settings from `user_config`, status, routing stats."""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import ray
from ray import serve

from deployments.batching import BatchStats, apply_batch_settings, run_in_token_budget
from deployments.common import (
    LoadedBackend,
    Refusal,
    configure_threads,
    load_chain,
    select_device,
    set_offline_env,
)
from deployments.gpu_stats import read_gpu_stats
from deployments.spec import DeploymentSpec, ReplicaUserConfig

logger = logging.getLogger("ray.serve.eduserve.deployments")


class InjectedFault(RuntimeError):
    """Raised by the test-only fault injection hook."""


class MultiplexState:
    """What a replica's multiplexed models are doing: loaded now (most recent last), loads, evictions."""

    def __init__(self, max_models: int, configured: list[str]):
        self.max_models = max_models
        self.configured = configured
        self.loaded: list[str] = []
        self.loads = 0
        self.evictions = 0
        self.load_seconds: dict[str, float] = {}

    def as_dict(self) -> dict[str, Any]:
        return {"max_models_per_replica": self.max_models, "configured": self.configured, "loaded": self.loaded,
                "loads": self.loads, "evictions": self.evictions,
                "last_load_seconds": {k: round(v, 3) for k, v in self.load_seconds.items()}}


class MultiplexedModel:
    """A model loaded on demand. Serve calls `__del__` when it evicts the model (least recently used): the
    backend is dropped and memory given back at once (gc, and the CUDA cache when one is in use). Requests
    already holding the backend finish with it; the memory goes when they do."""

    def __init__(self, model_id: str, backend: Any, state: MultiplexState, cuda: bool):
        self.model_id = model_id
        self.backend = backend
        self._state = state
        self._cuda = cuda
        self._released = False

    def __del__(self) -> None:
        if self._released:  # called by Serve on eviction, then again by the garbage collector
            return
        self._released = True
        self.backend = None
        if self.model_id in self._state.loaded:
            self._state.loaded.remove(self.model_id)
            self._state.evictions += 1
        gc.collect()
        if self._cuda:
            import torch

            torch.cuda.empty_cache()


@contextmanager
def ongoing_request(replica: Any) -> Iterator[None]:
    """One request counted in the replica's `ongoing` while it runs (the GPU router's load figure)."""
    replica.ongoing += 1
    try:
        yield
    finally:
        replica.ongoing -= 1


def counted(method: Callable[..., Any]) -> Callable[..., Any]:
    """A request method of a replica that does not go through `_submit` (which counts its own): counted in the
    replica's `ongoing` while it runs, a stream until it ends, as the GPU router reads it for every role."""
    if inspect.isasyncgenfunction(method):
        @functools.wraps(method)
        async def stream(self: ModelReplica, *args: Any, **kwargs: Any) -> Any:
            with ongoing_request(self):
                items = method(self, *args, **kwargs)
                try:
                    async for item in items:
                        yield item
                finally:
                    await items.aclose()

        return stream

    @functools.wraps(method)
    async def call(self: ModelReplica, *args: Any, **kwargs: Any) -> Any:
        with ongoing_request(self):
            return await method(self, *args, **kwargs)

    return call


class ModelReplica:
    """Base of the model deployment classes. Subclasses set `role`, `factories` and a `@serve.batch` `_batch`."""

    role: ClassVar[str]
    factories: ClassVar[dict[str, Any]]

    def __init__(self, spec: DeploymentSpec, offline: bool = True, models_dir: str | None = None):
        self._configure(spec, offline, models_dir)
        self._use(load_chain(spec.chain, self.factories, self.device, self.models_dir) if spec.chain else None)

    def _configure(self, spec: DeploymentSpec, offline: bool, models_dir: str | None) -> None:
        """Everything but loading the model (deployments whose backends start asynchronously load after it)."""
        set_offline_env(offline)
        configure_threads(spec.threads)
        self.spec = spec
        self.device = select_device(spec.device)
        if self.device.degraded:
            logger.warning("%s: %s", spec.name, self.device.degraded_reason)
        self.models_dir = models_dir  # unset: the load chain resolves the default on this replica's node
        self.config = ReplicaUserConfig.model_validate(spec.user_config())
        self.stats = BatchStats()
        self.ongoing = 0
        self.multiplex: MultiplexState | None = None
        if spec.multiplex is not None:
            self.multiplex = MultiplexState(spec.multiplex.max_models_per_replica, sorted(spec.multiplex.models))

            async def load(model_id: str) -> MultiplexedModel:
                started = time.perf_counter()
                loaded = await asyncio.to_thread(self._load_multiplexed, model_id)
                backend = await self._wrap_multiplexed(model_id, loaded.backend)
                return self._multiplexed_loaded(model_id, backend, time.perf_counter() - started)

            # Wired at init so the profile sets the LRU size; Serve detects instance-level multiplexing.
            self._get_multiplexed = serve.multiplexed(
                max_num_models_per_replica=spec.multiplex.max_models_per_replica
            )(load)

    def _use(self, loaded: LoadedBackend | None) -> None:
        self.loaded = loaded
        self.backend = loaded.backend if loaded else None

    def _load_multiplexed(self, model_id: str) -> LoadedBackend:
        assert self.spec.multiplex is not None
        return load_chain(self.spec.multiplex.models[model_id], self.factories, self.device, self.models_dir)

    def _multiplexed_loaded(self, model_id: str, backend: Any, seconds: float) -> MultiplexedModel:
        assert self.multiplex is not None
        self.multiplex.loads += 1
        self.multiplex.load_seconds[model_id] = seconds
        self.multiplex.loaded.append(model_id)
        logger.info("%s loaded multiplexed model %s in %.2fs", self.spec.name, model_id, seconds)
        return MultiplexedModel(model_id, backend, self.multiplex, self.device.kind == "cuda")

    async def _wrap_multiplexed(self, model_id: str, backend: Any) -> Any:
        """Hook for deployments whose multiplexed entries are not standalone backends (LLM adapters)."""
        return backend

    async def _select(self) -> tuple[Any, Refusal | None]:
        """The backend for this request: the deployment's own model, or the multiplexed model the request names
        (Serve's multiplexed model id). A name that is not configured is refused, never loaded."""
        model_id = serve.get_multiplexed_model_id()
        if not model_id:
            if self.backend is None:
                return None, Refusal("model_not_found", "name one of this deployment's models", "model")
            return self.backend, None
        if self.spec.multiplex is None or model_id not in self.spec.multiplex.models:
            return None, Refusal("model_not_found", f"model {model_id!r} is not served here", "model")
        model = await self._get_multiplexed(model_id)
        if self.multiplex is not None and model_id in self.multiplex.loaded:  # most recently used last
            self.multiplex.loaded.remove(model_id)
            self.multiplex.loaded.append(model_id)
        return model.backend, None

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Serve calls this with the deployment's `user_config` at start and on every change."""
        self.config = ReplicaUserConfig.model_validate(user_config or {})
        apply_batch_settings(self._batch, self.config)

    def _batch(self, item: Any) -> Any:  # replaced by a @serve.batch method in each subclass
        raise NotImplementedError

    def _forward(self, backend: Any, payloads: list[Any]) -> Any:  # the backend call of a batched subclass
        raise NotImplementedError

    def _count_tokens(self, backend: Any, payloads: Sequence[Any]) -> list[int]:
        return backend.count_tokens(payloads)

    async def _submit(self, items: list[tuple[Any, Any]]) -> list[tuple[Any, int]]:
        """One request's (backend, payload) items through the replica-wide `@serve.batch` queue, so concurrent
        requests share forward passes; a request alone on the replica runs at once instead of waiting out the
        batch window for company that is not coming (measured in bench/RESULTS.md, issue 15)."""
        enqueued = time.perf_counter()
        stamped = [(backend, payload, enqueued) for backend, payload in items]
        with ongoing_request(self):
            await asyncio.sleep(0)  # requests already delivered to this loop count themselves in first
            if self.ongoing == 1 and len(items) <= self.config.max_batch_size:
                return self._run_batch(stamped)
            return list(await asyncio.gather(*(self._batch(item) for item in stamped)))

    def _run_batch(self, items: Sequence[tuple[Any, Any, float]]) -> list[tuple[Any, int]]:
        """One `@serve.batch` call over (backend, payload, enqueued at) items: fault hooks, then, per backend (a
        batch may mix multiplexed models), forward passes within the token budget. (output, tokens) per item."""
        waited = time.perf_counter() - min(enqueued for _, _, enqueued in items) if items else None
        self._inject_faults()
        results: list[Any] = [None] * len(items)
        passes = 0
        groups: dict[int, list[int]] = {}
        for index, (backend, _, _) in enumerate(items):
            groups.setdefault(id(backend), []).append(index)
        for indices in groups.values():
            backend = items[indices[0]][0]
            payloads = [items[i][1] for i in indices]
            lengths = self._count_tokens(backend, payloads)
            outputs, group_passes = run_in_token_budget(
                payloads, lengths, self.config.max_batch_tokens, lambda chunk, b=backend: self._forward(b, chunk)
            )
            passes += group_passes
            for index, output, tokens in zip(indices, outputs, lengths, strict=True):
                results[index] = (output, tokens)
        self.stats.record(len(items), passes, waited)
        return results

    def _inject_faults(self) -> None:
        """The test-only hooks of `user_config.fault_injection` (off unless configured)."""
        faults = self.config.fault_injection
        if faults.added_latency_s:
            time.sleep(faults.added_latency_s)  # blocks like a real forward pass would
        if faults.fail_while_file_exists and os.path.exists(faults.fail_while_file_exists):
            raise InjectedFault(f"{self.spec.name}: injected failure")

    def _details(self) -> dict[str, Any]:
        return {}

    def record_routing_stats(self) -> dict[str, Any]:
        """Polled by Serve for request routers (deployments/gpu_router.py)."""
        stats: dict[str, Any] = {"ongoing": self.ongoing, "device_degraded": self.device.degraded}
        stats.update(read_gpu_stats(self.device.torch_device, self.spec.num_gpus or 1.0) or {})
        return stats

    async def info(self) -> dict[str, Any]:
        """Status of this replica: what it loaded, where it runs, how it batches."""
        try:
            context = ray.get_runtime_context()
            replica = serve.get_replica_context().replica_id.unique_id
            node, gpu_ids = context.get_node_id(), context.get_accelerator_ids().get("GPU", [])
        except Exception:  # outside a Serve replica (unit tests)
            replica, node, gpu_ids = None, None, []
        return {
            "role": self.role,
            "deployment": self.spec.name,
            "tier": self.spec.tier,
            "replica": replica,
            "node": node,
            "pid": os.getpid(),
            "gpu_ids": gpu_ids,
            "device": self.device.as_dict(),
            "active": self.loaded.describe() if self.loaded else None,
            "multiplexed": self.multiplex.as_dict() if self.multiplex else None,
            "batching": self.config.model_dump(include={"max_batch_size", "batch_wait_timeout_s", "max_batch_tokens"}),
            "stats": self.stats.as_dict(),
            "routing_stats": self.record_routing_stats(),
            **self._details(),
        }
