"""Replica choice inside a GPU deployment (Ray Serve `RequestRouter`).

Replicas report `record_routing_stats()` (ongoing requests, GPU memory use and temperature when a GPU is
visible). The router ranks replicas by load, and puts any replica that reports overheating, memory pressure or
a missing GPU in a last rank, which Serve only reaches when no other replica accepts the request.

Which deployment (GPU or CPU) serves a request is decided before this, in the ingress (serve_app/routing.py):
all replicas of one deployment share their actor options, so a RequestRouter only ever chooses among peers.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ray.serve.request_router import (
    FIFOMixin,
    MultiplexMixin,
    PendingRequest,
    RequestRouter,
    RunningReplica,
)


@dataclass(frozen=True)
class Thresholds:
    max_temperature_c: float = 85.0
    max_memory_fraction: float = 0.95
    memory_weight: float = 4.0  # how many queued requests a full GPU memory counts as


def is_stressed(stats: Mapping[str, Any], thresholds: Thresholds) -> bool:
    """Overheating, short of GPU memory, or without the GPU it was scheduled for."""
    if stats.get("device_degraded"):
        return True
    temperature = stats.get("gpu_temperature_c")
    if temperature is not None and temperature >= thresholds.max_temperature_c:
        return True
    memory = stats.get("gpu_memory_used_fraction")
    return memory is not None and memory >= thresholds.max_memory_fraction


def load_score(stats: Mapping[str, Any], queue_len: int | None, thresholds: Thresholds) -> float:
    """Lower is better: the freshest queue length we have, plus a penalty for GPU memory in use."""
    ongoing = queue_len if queue_len is not None else stats.get("ongoing", 0)
    return float(ongoing) + thresholds.memory_weight * float(stats.get("gpu_memory_used_fraction") or 0.0)


def rank_replicas(
    replicas: Sequence[Any],
    stats_of: Any,
    queue_len_of: Any,
    thresholds: Thresholds,
) -> list[list[Any]]:
    """Healthy replicas one per rank, least loaded first; stressed replicas together in the last rank.

    Ties are broken at random: with a stable order, idle replicas would all lose to the first one listed.
    """
    shuffled = random.sample(list(replicas), len(replicas))
    healthy = [r for r in shuffled if not is_stressed(stats_of(r), thresholds)]
    stressed = [r for r in shuffled if is_stressed(stats_of(r), thresholds)]
    healthy.sort(key=lambda r: load_score(stats_of(r), queue_len_of(r), thresholds))
    ranks = [[r] for r in healthy]
    if stressed:
        ranks.append(stressed)
    return ranks


class GpuAwareRequestRouter(FIFOMixin, MultiplexMixin, RequestRouter):
    """Configured per deployment with `request_router_config` (profile: `request_router`). A request for a
    multiplexed model goes to replicas that have it loaded first (then those with the fewest models, then any, as
    Serve's own router does), ranked among themselves: without that, multiplexed models thrash between replicas."""

    def initialize_state(self, **kwargs: Any) -> None:
        self.thresholds = Thresholds(**kwargs)

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        thresholds = getattr(self, "thresholds", Thresholds())
        if pending_request is not None and pending_request.metadata.multiplexed_model_id:
            wanted = self.apply_multiplex_routing(pending_request=pending_request)
            candidate_replicas = [r for r in candidate_replicas if r.replica_id in wanted]
        return rank_replicas(
            candidate_replicas,
            stats_of=lambda r: r.routing_stats or {},
            queue_len_of=lambda r: self._replica_queue_len_cache.get(r.replica_id),
            thresholds=thresholds,
        )
