"""The part every model replica shares: load on start, batch settings from `user_config`, status."""

from __future__ import annotations

import logging
import os
from typing import Any, ClassVar

import ray
from ray import serve

from deployments.common import (
    BatchStats,
    apply_batch_settings,
    configure_threads,
    load_chain,
    select_device,
    set_offline_env,
)
from deployments.spec import BatchSettings, DeploymentSpec

logger = logging.getLogger("eduserve.deployments")


class ModelReplica:
    """Base of the model deployment classes. Subclasses set `role`, `factories` and a `@serve.batch` `_batch`."""

    role: ClassVar[str]
    factories: ClassVar[dict[str, Any]]

    def __init__(self, spec: DeploymentSpec, offline: bool = True):
        set_offline_env(offline)
        configure_threads(spec.threads)
        self.spec = spec
        self.device = select_device(spec.device)
        if self.device.degraded:
            logger.warning("%s: %s", spec.name, self.device.degraded_reason)
        self.loaded = load_chain(spec.chain, self.factories, self.device)
        self.backend = self.loaded.backend
        self.batching = spec.batching
        self.stats = BatchStats()

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Serve calls this with the deployment's `user_config` at start and on every change."""
        self.batching = BatchSettings.model_validate(user_config or {})
        apply_batch_settings(self._batch, self.batching)

    def _batch(self, item: Any) -> Any:  # replaced by a @serve.batch method in each subclass
        raise NotImplementedError

    def _details(self) -> dict[str, Any]:
        return {}

    async def info(self) -> dict[str, Any]:
        """Status of this replica: what it loaded, where it runs, how it batches."""
        try:
            replica = serve.get_replica_context().replica_id.unique_id
            gpu_ids = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
        except Exception:  # outside a Serve replica (unit tests)
            replica, gpu_ids = None, []
        return {
            "role": self.role,
            "deployment": self.spec.name,
            "replica": replica,
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id() if ray.is_initialized() else None,
            "gpu_ids": gpu_ids,
            "device": self.device.as_dict(),
            "active": self.loaded.describe(),
            "batching": self.batching.model_dump(),
            "stats": self.stats.as_dict(),
            **self._details(),
        }
