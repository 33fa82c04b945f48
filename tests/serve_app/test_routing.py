"""The fallback router's decisions, on fake handles (pure logic: no Ray needed).

The same behaviour runs for real on Ray with logical GPUs in tests/gpu/test_gpu_profile.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from ray.exceptions import ActorDiedError, RayTaskError
from ray.serve.exceptions import BackPressureError

from deployments.spec import DeploymentSpec
from serve_app import request_trace
from serve_app.errors import EduserveError, ErrorCode
from serve_app.model_config import RoutingPolicy
from serve_app.routing import ModelRouter, Target, make_breakers


class FakeResponse:
    def __init__(self, coro):
        self._coro = coro
        self.cancelled = False

    def __await__(self):
        return self._coro.__await__()

    def cancel(self):
        self.cancelled = True


class FakeStream:
    def __init__(self, agen):
        self._agen = agen
        self.cancelled = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self._agen.__anext__()

    def cancel(self):
        self.cancelled = True


class FakeHandle:
    """Stands in for a DeploymentHandle: `behaviour(method, *args)` is awaited (or iterated when streaming)."""

    def __init__(self, behaviour, streaming=None):
        self.behaviour = behaviour
        self.streaming = streaming
        self.calls: Counter[str] = Counter()
        self.responses: list[FakeResponse] = []
        self._stream = False

    def options(self, stream: bool = False):
        clone = FakeHandle(self.behaviour, self.streaming)
        clone.calls, clone.responses, clone._stream = self.calls, self.responses, stream
        return clone

    def __getattr__(self, method):
        handle = self

        class Method:
            def remote(self, *args, **kwargs):
                handle.calls[method] += 1
                if handle._stream:
                    return FakeStream(handle.streaming(method, *args))
                response = FakeResponse(handle.behaviour(method, *args))
                handle.responses.append(response)
                return response

        return Method()


def spec(name: str, gpu: bool) -> DeploymentSpec:
    return DeploymentSpec(
        name=name, device="cuda" if gpu else "cpu", num_gpus=0.25 if gpu else 0,
        chain=[{"backend": "x", "model": "y"}],
    )


def answer(tag, delay=0.0, degraded=None):
    async def behaviour(method, *args):
        if method == "info":
            return {"device": {"degraded_reason": degraded}}
        await asyncio.sleep(delay)
        return f"{tag}:{args[0] if args else ''}"

    return behaviour


def failing(exc_factory):
    async def behaviour(method, *args):
        if method == "info":
            return {"device": {"degraded_reason": None}}
        raise exc_factory()

    return behaviour


def router(primary, fallback=None, **policy) -> ModelRouter:
    defaults = {"breaker_failure_threshold": 3, "breaker_reset_s": 0.3, "primary_timeout_s": 1.0,
                "degraded_primary_is_unavailable": False}
    return ModelRouter(
        "embedder",
        Target(spec("EmbedderGPU", True), primary),
        Target(spec("EmbedderCPU", False), fallback) if fallback is not None else None,
        RoutingPolicy(**{**defaults, **policy}),
        call_timeout_s=1.0,
        breakers=make_breakers(),
    )


@pytest.mark.parametrize(
    ("exc_factory", "code"),
    [
        (lambda: BackPressureError(num_queued_requests=4, max_queued_requests=4), ErrorCode.OVERLOADED),
        (ActorDiedError, ErrorCode.MODEL_UNAVAILABLE),
        # the model raised: on the input's account (422) or its own (503 + Retry-After), never a 500
        (lambda: RayTaskError("embed", "traceback", ValueError("boom")), ErrorCode.UNPROCESSABLE_INPUT),
        (lambda: RayTaskError("embed", "traceback", RuntimeError("boom")), ErrorCode.MODEL_FAILED),
    ],
)
async def test_without_fallback_failures_become_api_errors(exc_factory, code):
    with pytest.raises(EduserveError) as error:
        await router(FakeHandle(failing(exc_factory))).call("embed", "x")
    assert error.value.code is code


async def test_without_fallback_a_slow_model_times_out_and_is_cancelled():
    primary = FakeHandle(answer("gpu", delay=5))
    with pytest.raises(EduserveError) as error:
        await router(primary).call("embed", "x", timeout_s=0.05)
    assert error.value.code is ErrorCode.TIMEOUT
    assert primary.responses[0].cancelled


async def test_backpressure_sends_the_call_to_the_fallback_at_once_and_never_opens_the_breaker():
    primary = FakeHandle(failing(lambda: BackPressureError(num_queued_requests=1, max_queued_requests=1)))
    fallback = FakeHandle(answer("cpu"))
    r = router(primary, fallback)
    results = [await r.call("embed", i) for i in range(10)]
    assert results == [f"cpu:{i}" for i in range(10)]
    assert primary.calls["embed"] == 10  # still tried every time: saturation is not a fault
    status = await r.status()
    assert status["breaker"] == "closed" and status["counts"] == {"saturated": 10}


async def test_faults_open_the_breaker_then_a_probe_closes_it():
    healthy = {"value": False}

    async def flaky(method, *args):
        if method == "info":
            return {"device": {"degraded_reason": None}}
        if not healthy["value"]:
            raise RayTaskError("embed", "tb", RuntimeError("cuda error"))
        return f"gpu:{args[0]}"

    primary, fallback = FakeHandle(flaky), FakeHandle(answer("cpu"))
    r = router(primary, fallback)
    assert [await r.call("embed", i) for i in range(5)] == [f"cpu:{i}" for i in range(5)]
    assert primary.calls["embed"] == 3  # the breaker opened after 3 failures: calls 4 and 5 skipped the GPU
    assert (await r.status())["breaker"] == "opened"
    assert (await r.status())["counts"] == {"fault": 3, "breaker_open": 2}

    healthy["value"] = True
    assert await r.call("embed", "still open") == "cpu:still open"
    await asyncio.sleep(0.35)
    assert await r.call("embed", "probe") == "gpu:probe"
    assert (await r.status())["breaker"] == "closed"
    assert await r.call("embed", "after") == "gpu:after"


async def test_a_failed_probe_reopens_the_breaker():
    primary = FakeHandle(failing(ActorDiedError))
    r = router(primary, FakeHandle(answer("cpu")))
    for i in range(3):
        await r.call("embed", i)
    await asyncio.sleep(0.35)
    assert await r.call("embed", "probe") == "cpu:probe"
    assert primary.calls["embed"] == 4
    assert (await r.status())["breaker"] == "opened"
    assert await r.call("embed", "again") == "cpu:again"
    assert primary.calls["embed"] == 4


async def test_primary_timeouts_count_as_failures_and_are_cancelled():
    primary = FakeHandle(answer("gpu", delay=5))
    r = router(primary, FakeHandle(answer("cpu")), primary_timeout_s=0.05)
    assert [await r.call("embed", i) for i in range(3)] == ["cpu:0", "cpu:1", "cpu:2"]
    assert all(response.cancelled for response in primary.responses)
    assert (await r.status())["breaker"] == "opened"


async def test_in_flight_limit_overflows_to_the_fallback_without_waiting():
    primary, fallback = FakeHandle(answer("gpu", delay=0.3)), FakeHandle(answer("cpu"))
    r = router(primary, fallback, primary_max_inflight=2)
    results = await asyncio.gather(*(r.call("embed", i) for i in range(5)))
    assert Counter(result.split(":")[0] for result in results) == {"gpu": 2, "cpu": 3}
    assert (await r.status())["counts"] == {"primary": 2, "saturated": 3}


async def test_a_primary_without_its_gpu_is_skipped_once_probed():
    primary = FakeHandle(answer("gpu", degraded="cuda requested but not available"))
    r = router(primary, FakeHandle(answer("cpu")), degraded_primary_is_unavailable=True)
    first = await r.call("embed", 0)  # unknown yet: the GPU deployment serves while the probe runs
    assert first == "gpu:0"
    await asyncio.sleep(0.01)
    assert r.primary_degraded is True
    assert await r.call("embed", 1) == "cpu:1"
    assert (await r.status())["counts"]["primary_degraded"] == 1


async def test_degraded_primary_serves_when_the_policy_allows_it():
    primary = FakeHandle(answer("gpu", degraded="no cuda"))
    r = router(primary, FakeHandle(answer("cpu")), degraded_primary_is_unavailable=False)
    assert [await r.call("embed", i) for i in range(3)] == ["gpu:0", "gpu:1", "gpu:2"]
    assert primary.calls["info"] == 0


def streaming(tag, fail_after=None, exc=None):
    async def chunks(method, *args):
        for i in range(3):
            if fail_after is not None and i == fail_after:
                raise exc
            yield f"{tag}{i}"

    return chunks


async def collect(stream):
    return [chunk async for chunk in stream]


async def test_stream_falls_back_before_the_first_chunk():
    primary = FakeHandle(None, streaming("g", fail_after=0, exc=ActorDiedError()))
    fallback = FakeHandle(None, streaming("c"))
    r = router(primary, fallback)
    assert await collect(r.stream("generate", "p")) == ["c0", "c1", "c2"]
    assert (await r.status())["counts"] == {"fault": 1}


async def test_stream_never_falls_back_after_the_first_chunk():
    primary = FakeHandle(None, streaming("g", fail_after=2, exc=RayTaskError("generate", "tb", RuntimeError("x"))))
    fallback = FakeHandle(None, streaming("c"))
    r = router(primary, fallback)
    received = []
    with pytest.raises(EduserveError) as error:
        async for chunk in r.stream("generate", "p"):
            received.append(chunk)
    assert received == ["g0", "g1"] and error.value.code is ErrorCode.MODEL_FAILED
    assert fallback.calls["generate"] == 0


async def test_an_input_the_model_cannot_take_is_a_422_that_neither_falls_back_nor_trips_the_breaker():
    bad_input = failing(lambda: RayTaskError("embed", "tb", UnicodeEncodeError("ascii", "é", 0, 1, "no")))
    primary, fallback = FakeHandle(bad_input), FakeHandle(answer("cpu"))
    r = router(primary, fallback, breaker_failure_threshold=2)
    for _ in range(5):
        with pytest.raises(EduserveError) as error:
            await r.call("embed", "x")
        assert error.value.code is ErrorCode.UNPROCESSABLE_INPUT and error.value.code.status == 422
    status = await r.status()
    assert status["breaker"] == "closed" and fallback.calls["embed"] == 0 and "fault" not in status["counts"]


async def test_a_stream_refused_for_its_input_does_not_trip_the_breaker():
    async def refuse(method, *args):
        raise RayTaskError("generate", "tb", ValueError("cannot phonemise"))
        yield  # an async generator

    primary, fallback = FakeHandle(None, refuse), FakeHandle(None, streaming("c"))
    r = router(primary, fallback, breaker_failure_threshold=2)
    for _ in range(3):
        with pytest.raises(EduserveError) as error:
            await collect(r.stream("generate", "p"))
        assert error.value.code is ErrorCode.UNPROCESSABLE_INPUT
    assert (await r.status())["breaker"] == "closed" and fallback.calls["generate"] == 0


async def test_stream_from_a_healthy_primary():
    r = router(FakeHandle(None, streaming("g")), FakeHandle(None, streaming("c")))
    assert await collect(r.stream("generate", "p")) == ["g0", "g1", "g2"]


def test_route_trace_headers():
    token = request_trace.start("req-1")
    try:
        assert request_trace.headers() == []
        assert request_trace.request_id() == "req-1"
        request_trace.record("embedder", "gpu", "EmbedderGPU")
        assert dict(request_trace.headers()) == {b"x-eduserve-device": b"gpu", b"x-eduserve-route": b"embedder=gpu"}
        request_trace.record("reranker", "cpu", "RerankerCPU")
        assert dict(request_trace.headers())[b"x-eduserve-device"] == b"mixed"
    finally:
        request_trace.reset(token)
    request_trace.record("embedder", "gpu", "x")  # outside a request: ignored
    assert request_trace.headers() == []
