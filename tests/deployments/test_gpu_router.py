"""The GPU deployments' RequestRouter: ranking on fake replicas, then inside a real Serve app."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from deployments.gpu_router import GpuAwareRequestRouter, Thresholds, is_stressed, rank_replicas


@dataclass(frozen=True)
class FakeReplica:
    replica_id: str
    routing_stats: dict = field(default_factory=dict, hash=False, compare=False)


DEFAULT = Thresholds()


def ranks(replicas, queue_lens=None, thresholds=DEFAULT):
    queue_lens = queue_lens or {}
    return rank_replicas(replicas, lambda r: r.routing_stats, lambda r: queue_lens.get(r.replica_id), thresholds)


def ids(ranking):
    return [[r.replica_id for r in rank] for rank in ranking]


def test_least_loaded_first_by_reported_stats():
    replicas = [FakeReplica("a", {"ongoing": 5}), FakeReplica("b", {"ongoing": 1}), FakeReplica("c", {"ongoing": 3})]
    assert ids(ranks(replicas)) == [["b"], ["c"], ["a"]]


def test_fresh_queue_lengths_beat_reported_stats():
    replicas = [FakeReplica("a", {"ongoing": 0}), FakeReplica("b", {"ongoing": 9})]
    assert ids(ranks(replicas, queue_lens={"a": 7, "b": 2})) == [["b"], ["a"]]


def test_gpu_memory_in_use_counts_as_load():
    replicas = [
        FakeReplica("full", {"ongoing": 1, "gpu_memory_used_fraction": 0.9}),
        FakeReplica("empty", {"ongoing": 2, "gpu_memory_used_fraction": 0.1}),
    ]
    assert ids(ranks(replicas))[0] == ["empty"]


@pytest.mark.parametrize(
    "stats",
    [
        {"gpu_temperature_c": 91.0},
        {"gpu_memory_used_fraction": 0.97},
        {"device_degraded": True},
    ],
)
def test_stressed_replicas_go_last_even_when_idle(stats):
    replicas = [FakeReplica("hot", {"ongoing": 0, **stats}), FakeReplica("cool", {"ongoing": 50})]
    assert ids(ranks(replicas)) == [["cool"], ["hot"]]
    assert is_stressed(stats, Thresholds())


def test_thresholds_are_configurable():
    hot = {"gpu_temperature_c": 80.0}
    assert not is_stressed(hot, Thresholds())
    assert is_stressed(hot, Thresholds(max_temperature_c=75))


def test_ties_are_broken_at_random():
    replicas = [FakeReplica(name, {"ongoing": 0}) for name in "abcd"]
    firsts = Counter(ids(ranks(replicas))[0][0] for _ in range(400))
    assert set(firsts) == set("abcd")


async def test_router_class_ranks_with_its_configured_thresholds():
    from ray.serve._private.common import DeploymentHandleSource, DeploymentID

    router = GpuAwareRequestRouter(
        deployment_id=DeploymentID(name="EmbedderGPU", app_name="test"), handle_source=DeploymentHandleSource.UNKNOWN
    )
    router.initialize_state(max_temperature_c=70)
    replicas = [FakeReplica("warm", {"gpu_temperature_c": 72.0}), FakeReplica("cold", {"gpu_temperature_c": 40.0})]
    assert ids(await router.choose_replicas(replicas)) == [["cold"], ["warm"]]


def test_never_routes_to_an_overheating_replica_in_a_real_serve_app(cpu_app, tmp_path):
    """Two replicas behind the router; one is told to report 95 °C; it gets no traffic while the other serves."""
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    hot_file = tmp_path / "hot.json"
    hot_file.write_text("[]")

    @serve.deployment(
        num_replicas=2,
        ray_actor_options={"num_cpus": 0},
        request_router_config=RequestRouterConfig(
            request_router_class="deployments.gpu_router:GpuAwareRequestRouter",
            request_routing_stats_period_s=0.2,
            request_routing_stats_timeout_s=1,
        ),
    )
    class ThermalProbe:
        def __init__(self, path: str):
            self.path = path
            self.replica = serve.get_replica_context().replica_id.unique_id

        def record_routing_stats(self) -> dict:
            with open(self.path) as hot_list:
                hot = self.replica in json.load(hot_list)
            return {"ongoing": 0, "gpu_temperature_c": 95.0 if hot else 40.0, "gpu_memory_used_fraction": 0.2}

        def __call__(self) -> str:
            return self.replica

    handle = serve.run(ThermalProbe.bind(str(hot_file)), name="router-probe", route_prefix=None)
    try:
        seen = {handle.remote().result() for _ in range(60)}
        assert len(seen) == 2, "both replicas should serve while neither is hot"
        hot = sorted(seen)[0]
        hot_file.write_text(json.dumps([hot]))
        time.sleep(2.0)  # a few stats periods: the controller polls replicas and pushes stats to routers
        served = Counter(handle.remote().result() for _ in range(60))
        assert served[hot] == 0 and sum(served.values()) == 60
    finally:
        serve.delete("router-probe")


@dataclass(frozen=True)
class FakeMultiplexReplica(FakeReplica):
    multiplexed_model_ids: frozenset = frozenset()
    max_ongoing_requests: int = 8


async def test_a_multiplexed_model_goes_to_the_replicas_that_have_it_loaded_ranked_among_themselves():
    from ray.serve._private.common import DeploymentHandleSource, DeploymentID, RequestMetadata
    from ray.serve.request_router import PendingRequest

    router = GpuAwareRequestRouter(
        deployment_id=DeploymentID(name="EmbedderGPU", app_name="test"), handle_source=DeploymentHandleSource.UNKNOWN
    )
    router.initialize_state()
    replicas = [
        FakeMultiplexReplica("idle-without", {"ongoing": 0}, frozenset({"other"})),
        FakeMultiplexReplica("busy-with", {"ongoing": 3}, frozenset({"lora-a"})),
        FakeMultiplexReplica("idle-with", {"ongoing": 1}, frozenset({"lora-a", "other"})),
    ]
    router.update_replicas(replicas)

    def request(model_id: str) -> PendingRequest:
        return PendingRequest(args=[], kwargs={}, metadata=RequestMetadata(
            request_id="r", internal_request_id="i", multiplexed_model_id=model_id))

    assert ids(await router.choose_replicas(replicas, request("lora-a"))) == [["idle-with"], ["busy-with"]]
    # Not loaded anywhere: the replicas with the fewest models, so loading it evicts the least.
    assert ids(await router.choose_replicas(replicas, request("lora-b"))) == [["idle-without"], ["busy-with"]]
    # No model asked for: every replica, least loaded first.
    assert ids(await router.choose_replicas(replicas)) == [["idle-without"], ["idle-with"], ["busy-with"]]
