"""The part every model replica shares: load on start, batch settings from `user_config`, status, routing stats."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import ray
from ray import serve

from deployments.common import (
    BatchStats,
    apply_batch_settings,
    configure_threads,
    load_chain,
    run_in_token_budget,
    select_device,
    set_offline_env,
)
from deployments.gpu_stats import read_gpu_stats
from deployments.spec import DeploymentSpec, ReplicaUserConfig

logger = logging.getLogger("ray.serve.eduserve.deployments")


class InjectedFault(RuntimeError):
    """Raised by the test-only fault injection hook."""


class ModelReplica:
    """Base of the model deployment classes. Subclasses set `role`, `factories` and a `@serve.batch` `_batch`."""

    role: ClassVar[str]
    factories: ClassVar[dict[str, Any]]

    def __init__(self, spec: DeploymentSpec, offline: bool = True, models_dir: str | None = None):
        set_offline_env(offline)
        configure_threads(spec.threads)
        self.spec = spec
        self.device = select_device(spec.device)
        if self.device.degraded:
            logger.warning("%s: %s", spec.name, self.device.degraded_reason)
        self.loaded = load_chain(spec.chain, self.factories, self.device, models_dir)
        self.backend = self.loaded.backend
        self.config = ReplicaUserConfig.model_validate(spec.user_config())
        self.stats = BatchStats()
        self.ongoing = 0

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Serve calls this with the deployment's `user_config` at start and on every change."""
        self.config = ReplicaUserConfig.model_validate(user_config or {})
        apply_batch_settings(self._batch, self.config)

    def _batch(self, item: Any) -> Any:  # replaced by a @serve.batch method in each subclass
        raise NotImplementedError

    def _run_batch(
        self,
        items: Sequence[Any],
        count_tokens: Callable[[Sequence[Any]], list[int]],
        forward: Callable[[list[Any]], Any],
    ) -> tuple[list[Any], list[int]]:
        """One `@serve.batch` call: fault hooks, then forward passes within the token budget."""
        self._inject_faults()
        lengths = count_tokens(items)
        outputs, passes = run_in_token_budget(items, lengths, self.config.max_batch_tokens, forward)
        self.stats.record(len(items), passes)
        return outputs, lengths

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
        stats.update(read_gpu_stats(self.device.torch_device) or {})
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
            "active": self.loaded.describe(),
            "batching": self.config.model_dump(include={"max_batch_size", "batch_wait_timeout_s", "max_batch_tokens"}),
            "stats": self.stats.as_dict(),
            "routing_stats": self.record_routing_stats(),
            **self._details(),
        }
