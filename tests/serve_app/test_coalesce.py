"""The ingress's Coalescer (pure logic: a recording function stands in for the model call): a lone request leaves at
once, requests that arrive while a call is in flight leave together, each gets its own results, and one request's
bad input or disconnect never costs the others theirs. The served path is covered by the embeddings API tests."""

from __future__ import annotations

import asyncio

import pytest

from serve_app import request_trace
from serve_app.coalesce import Coalescer
from serve_app.errors import EduserveError, ErrorCode


class Model:
    """Doubles numbers; a call waits until released, so tests decide what is in flight. Refuses negative input."""

    def __init__(self, hold: bool = True):
        self.calls: list[tuple[object, list[int]]] = []
        self.release = asyncio.Event()
        if not hold:
            self.release.set()

    async def __call__(self, key, items: list[int]) -> list[int]:
        self.calls.append((key, list(items)))
        request_trace.record("embedder", "cpu", f"call-{len(self.calls)}")
        await self.release.wait()
        if any(item < 0 for item in items):
            raise EduserveError(ErrorCode.UNPROCESSABLE_INPUT, "negative input")
        if any(item == 13 for item in items):
            raise EduserveError(ErrorCode.MODEL_UNAVAILABLE, "the embedder is unavailable")
        return [2 * item for item in items]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_lone_request_leaves_at_once():
    model = Model(hold=False)
    coalescer = Coalescer(model, max_items=8)
    assert await asyncio.wait_for(coalescer.submit("m", [1, 2]), 1) == [2, 4]
    assert model.calls == [("m", [1, 2])]


async def test_requests_arriving_during_a_call_leave_together_with_their_own_results():
    model = Model()
    coalescer = Coalescer(model, max_items=8)
    first = asyncio.create_task(coalescer.submit("m", [1]))
    await settle()
    later = [asyncio.create_task(coalescer.submit("m", [10 * n, 10 * n + 1])) for n in range(1, 4)]
    await settle()
    assert model.calls == [("m", [1])]  # the others wait for the call in flight
    model.release.set()
    assert await first == [2]
    assert [await task for task in later] == [[20, 22], [40, 42], [60, 62]]
    assert model.calls == [("m", [1]), ("m", [10, 11, 20, 21, 30, 31])]
    assert coalescer.stats() == {"requests": 4, "calls": 2, "requests_per_call": 2.0}


async def test_a_call_never_exceeds_max_items_and_models_are_not_mixed():
    model = Model()
    coalescer = Coalescer(model, max_items=4)
    busy = asyncio.create_task(coalescer.submit("m", [0]))
    await settle()
    tasks = [asyncio.create_task(coalescer.submit("m", [n, n])) for n in (1, 2, 3)]
    other = asyncio.create_task(coalescer.submit("other", [7]))
    big = asyncio.create_task(coalescer.submit("m", [9] * 6))
    await settle()
    model.release.set()
    await asyncio.gather(busy, *tasks, other, big)
    assert sorted(model.calls) == sorted([("m", [0]), ("other", [7]), ("m", [1, 1, 2, 2]), ("m", [3, 3]),
                                          ("m", [9] * 6)])
    assert big.result() == [18] * 6 and other.result() == [14]


async def test_max_in_flight_calls_leave_without_waiting():
    model = Model()
    coalescer = Coalescer(model, max_items=8, max_in_flight=2)
    tasks = [asyncio.create_task(coalescer.submit("m", [n])) for n in (1, 2, 3, 4)]
    await settle()
    assert model.calls == [("m", [1]), ("m", [2])]
    model.release.set()
    assert [await task for task in tasks] == [[2], [4], [6], [8]]
    assert model.calls[2:] == [("m", [3, 4])]


async def test_one_requests_bad_input_fails_only_that_request():
    model = Model()
    coalescer = Coalescer(model, max_items=8)
    busy = asyncio.create_task(coalescer.submit("m", [0]))
    await settle()
    good, bad, also_good = (asyncio.create_task(coalescer.submit("m", items)) for items in ([1], [-1], [2]))
    await settle()
    model.release.set()
    assert await busy == [0] and await good == [2] and await also_good == [4]
    with pytest.raises(EduserveError) as caught:
        await bad
    assert caught.value.code is ErrorCode.UNPROCESSABLE_INPUT


async def test_a_failing_model_fails_every_request_of_the_call_with_its_error():
    model = Model()
    coalescer = Coalescer(model, max_items=8)
    busy = asyncio.create_task(coalescer.submit("m", [0]))
    await settle()
    tasks = [asyncio.create_task(coalescer.submit("m", items)) for items in ([1], [13])]
    await settle()
    model.release.set()
    await busy
    for task in tasks:
        with pytest.raises(EduserveError) as caught:
            await task
        assert caught.value.code is ErrorCode.MODEL_UNAVAILABLE
    assert len(model.calls) == 2  # not retried one by one: the model, not an input, failed


async def test_a_disconnected_client_does_not_cancel_the_call_it_shared():
    calls: list[list[int]] = []
    gates = [asyncio.Event(), asyncio.Event()]  # one per call: the test opens them one at a time

    async def model(key, items: list[int]) -> list[int]:
        calls.append(list(items))
        await gates[len(calls) - 1].wait()
        return [2 * item for item in items]

    coalescer = Coalescer(model, max_items=8)
    busy = asyncio.create_task(coalescer.submit("m", [0]))
    await settle()
    leaving, staying = (asyncio.create_task(coalescer.submit("m", [n])) for n in (1, 2))
    await settle()
    gates[0].set()
    await busy
    await settle()
    assert calls == [[0], [1, 2]]  # the shared call is in flight
    leaving.cancel()
    await settle()
    gates[1].set()
    assert await staying == [4]
    assert leaving.cancelled()


async def test_every_request_carries_the_routing_record_of_the_call_it_rode_in():
    model = Model()
    coalescer = Coalescer(model, max_items=8)

    async def request(n: int) -> list[tuple[str, str, str]]:
        request_trace.start()
        await coalescer.submit("m", [n])
        return request_trace.entries()

    busy = asyncio.create_task(request(0))
    await settle()
    riders = [asyncio.create_task(request(n)) for n in (1, 2)]
    await settle()
    model.release.set()
    assert await busy == [("embedder", "cpu", "call-1")]
    assert [await task for task in riders] == [[("embedder", "cpu", "call-2")]] * 2


async def test_a_request_gone_before_its_call_left_is_not_sent():
    model = Model()
    coalescer = Coalescer(model, max_items=8)
    busy = asyncio.create_task(coalescer.submit("m", [0]))
    await settle()
    gone, staying = (asyncio.create_task(coalescer.submit("m", [n])) for n in (1, 2))
    await settle()
    gone.cancel()
    await settle()
    model.release.set()
    assert await busy == [0] and await staying == [4]
    assert model.calls == [("m", [0]), ("m", [2])]


async def closed_loop(coalescer: Coalescer, clients: int, rounds: int, stagger_s: float) -> None:
    """`clients` each submitting again as soon as answered; client i takes i * stagger_s to come back, as answers
    leave one at a time through one event loop."""
    async def client(i: int) -> None:
        for n in range(rounds):
            await asyncio.sleep(i * stagger_s)
            assert await coalescer.submit("m", [n]) == [2 * n]

    await asyncio.gather(*(client(i) for i in range(clients)))


async def test_under_closed_loop_load_the_clients_answered_together_leave_together_again():
    async def model(key, items: list[int]) -> list[int]:
        sizes.append(len(items))
        await asyncio.sleep(0.005)
        return [2 * item for item in items]

    sizes: list[int] = []
    await closed_loop(Coalescer(model, max_items=64), clients=4, rounds=6, stagger_s=0.001)
    assert sizes[-4:] == [1, 3, 1, 3]  # without a wait: the first back leaves alone, the rest queue behind it
    sizes.clear()
    await closed_loop(Coalescer(model, max_items=64, max_wait_s=0.05), clients=4, rounds=6, stagger_s=0.001)
    assert sizes[0] == 1 and sizes[2:-1] == [4] * (len(sizes) - 3)  # the first client ends a round ahead


async def test_a_wait_for_company_is_bounded_and_clients_that_do_not_come_back_stop_the_waits():
    model = Model()
    coalescer = Coalescer(model, max_items=64, max_wait_s=0.05, pause_s=60)
    loop = asyncio.get_running_loop()

    async def timed(*requests: list[int]) -> float:
        started = loop.time()
        await asyncio.gather(*(coalescer.submit("m", items) for items in requests))
        return loop.time() - started

    busy = asyncio.create_task(coalescer.submit("m", [0]))
    await settle()
    assert model.calls == [("m", [0])]  # nothing came before it: it left at once
    riders = asyncio.create_task(timed([1], [2], [3], [4]))
    await settle()
    model.release.set()
    await busy
    assert 0.04 <= await riders < 1  # five were in play: the four waited max_wait_s for the fifth, not longer
    assert model.calls[1] == ("m", [1, 2, 3, 4])
    assert await timed([5]) < 0.04  # four were in play, but the one the wait was for never came: no more waits
    assert model.calls[2] == ("m", [5])


async def test_requests_filling_a_call_leave_without_waiting():
    model = Model()
    coalescer = Coalescer(model, max_items=4, max_wait_s=10)
    busy = asyncio.create_task(coalescer.submit("m", [0]))
    await settle()
    first = [asyncio.create_task(coalescer.submit("m", [n])) for n in range(1, 8)]
    await settle()
    model.release.set()  # [0] ends with 7 waiting: calls of 4, then the 3 left wait for company (7 were in play)
    await asyncio.gather(busy, *first[:4])
    await settle()
    assert model.calls == [("m", [0]), ("m", [1, 2, 3, 4])]
    last = asyncio.create_task(coalescer.submit("m", [8]))  # four items fill a call: nobody waits out the 10 s
    assert await asyncio.wait_for(asyncio.gather(*first[4:], last), 1) == [[10], [12], [14], [16]]
