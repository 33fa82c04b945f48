"""ModelReplica._submit, the batching decision of every batched model deployment (pure logic: a counting backend
stands in for the model, Ray Serve's own `@serve.batch` queue is real): a request alone on the replica runs at once
instead of waiting out the batch window; concurrent requests still share passes."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from ray import serve

from deployments.base import ModelReplica, counted
from deployments.batching import BatchStats
from deployments.spec import ReplicaUserConfig

WINDOW_S = 3.0  # far longer than any forward here: a request that waited it out would show


@pytest.fixture(autouse=True)
def outside_a_replica(monkeypatch):
    """`@serve.batch` reads the replica's max_ongoing_requests once, for a warning; there is no replica here."""
    context = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=64))
    monkeypatch.setattr(serve, "get_replica_context", lambda: context)


class Doubler:
    def __init__(self):
        self.passes: list[int] = []

    def count_tokens(self, payloads):
        return [1] * len(payloads)

    def double(self, payloads):
        self.passes.append(len(payloads))
        return [2 * p for p in payloads]


class Probe(ModelReplica):
    role = "probe"
    factories = {}

    def __init__(self, max_batch_size: int):
        self.config = ReplicaUserConfig(max_batch_size=max_batch_size, batch_wait_timeout_s=WINDOW_S)
        self.stats, self.ongoing = BatchStats(), 0
        self._batch.set_max_batch_size(max_batch_size)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=WINDOW_S)
    async def _batch(self, items):
        return self._run_batch(items)

    def _forward(self, backend, payloads):
        return backend.double(payloads)


async def test_a_lone_request_does_not_wait_for_the_batch_window():
    probe, backend = Probe(max_batch_size=8), Doubler()
    started = time.monotonic()
    results = await probe._submit([(backend, 1), (backend, 2), (backend, 3)])
    assert time.monotonic() - started < WINDOW_S / 2
    assert results == [(2, 1), (4, 1), (6, 1)]
    assert backend.passes == [3] and probe.ongoing == 0


async def test_concurrent_requests_share_passes_through_the_queue():
    probe, backend = Probe(max_batch_size=8), Doubler()
    results = await asyncio.gather(*(probe._submit([(backend, i)]) for i in range(8)))
    assert [r[0][0] for r in results] == [2 * i for i in range(8)]
    assert backend.passes == [8]  # one full batch, dispatched as soon as it filled


async def test_a_lone_request_larger_than_a_batch_goes_through_the_queue():
    probe, backend = Probe(max_batch_size=4), Doubler()
    results = await probe._submit([(backend, i) for i in range(8)])
    assert [value for value, _ in results] == [2 * i for i in range(8)]
    assert backend.passes == [4, 4]


class Streamer:
    """A replica whose methods do not go through `_submit`: `counted` keeps its `ongoing` for the GPU router."""

    def __init__(self):
        self.ongoing = 0
        self.seen: list[int] = []
        self.release = asyncio.Event()

    @counted
    async def call(self) -> None:
        await self.release.wait()

    @counted
    async def stream(self, n: int):
        for index in range(n):
            self.seen.append(self.ongoing)
            yield index


async def test_calls_and_streams_count_as_ongoing_while_they_run():
    replica = Streamer()
    calls = [asyncio.create_task(replica.call()) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert replica.ongoing == 2
    replica.release.set()
    await asyncio.gather(*calls)
    assert replica.ongoing == 0
    assert [item async for item in replica.stream(3)] == [0, 1, 2] and replica.seen == [1, 1, 1]
    left = replica.stream(10)
    assert await anext(left) == 0 and replica.ongoing == 1
    await left.aclose()  # the client went away mid-stream
    assert replica.ongoing == 0
