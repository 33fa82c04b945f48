"""Concurrent requests for the same model merged into one model call in the ingress (and concurrent rate-limit
hits of one key merged into one Redis call).

Each model call costs the ingress and the replica a fixed amount of CPU (a handle call, Serve's request handling on
both sides, a batch-queue round), whatever its size. Under load, requests that arrive while this ingress replica's
calls are in flight wait and then leave together as one call; a request that finds a free slot leaves at once,
so a lone request never waits for company. The merged call runs in a task of its own: a client that disconnects
cancels its own wait, never the call the others share.

Clients answered together often come straight back (a worker pool embedding a corpus, any closed loop), one by one
through the ingress's single loop: the first back finds the slot free and leaves alone, the rest queue behind it,
and calls of 1 and n-1 alternate, two round trips per cohort. So a request that finds a free slot while fewer wait
than were in play when the last call ended waits up to `max_wait_s` for them. Independent clients do not come back
together; there the wait only adds latency, so a wait that ends before most of the last call's clients came back
stops waits for `pause_s`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from serve_app import request_trace
from serve_app.errors import EduserveError, ErrorCode

Item = TypeVar("Item")
Result = TypeVar("Result")

# A request whose own input a merged call could not take: split the call, so only that request fails.
INPUT_ERRORS = (ErrorCode.UNPROCESSABLE_INPUT, ErrorCode.BAD_REQUEST)
# A wait for company after which fewer requests had come than this share of those the last call answered: the
# clients are independent (they do not come back together), so waits stop for a while.
COME_BACK_SHARE = 0.75


@dataclass
class _Waiting(Generic[Item]):
    items: list[Item]
    future: asyncio.Future


@dataclass
class _Lane(Generic[Item]):
    """The calls in flight and the requests waiting, for one key (one model)."""

    in_flight: int = 0
    waiting: list[_Waiting[Item]] = field(default_factory=list)
    expected: int = 0  # requests in play when the last call ended: it carried them, or they waited for it
    answered: int = 0  # requests the last call that ended carried
    came_back: int = 0  # requests that arrived since
    hold_until: float | None = None  # loop time until which a free slot waits for company
    paused_until: float = 0.0  # loop time before which nobody waits for company (clients did not come back)
    timer: asyncio.TimerHandle | None = None


class Coalescer(Generic[Item, Result]):
    """`submit(key, items)` → `call(key, merged items)`'s results for those items, in order.

    At most `max_in_flight` calls per key at once; a call carries at most `max_items` items (a request larger than
    that goes alone); a request waits at most `max_wait_s` for company, and after a wait by the end of which most
    of the last call's clients had not come back, nobody waits for `pause_s`. `call` must return one result per
    item, in order. With a wait (`max_wait_s` > 0) each key keeps a small lane between calls, so keys should be
    few (one per model); without one, a key's lane goes when its last call ends, so keys may be many."""

    def __init__(self, call: Callable[[Hashable, list[Item]], Awaitable[list[Result]]], max_items: int,
                 max_in_flight: int = 1, max_wait_s: float = 0.0, pause_s: float = 1.0):
        self._call = call
        self.max_items = max_items
        self.max_in_flight = max_in_flight
        self.max_wait_s = max_wait_s
        self.pause_s = pause_s
        self._lanes: dict[Hashable, _Lane[Item]] = {}
        self._tasks: set[asyncio.Task] = set()
        self.calls = 0
        self.requests = 0

    async def submit(self, key: Hashable, items: list[Item]) -> list[Result]:
        self.requests += 1
        lane = self._lanes.setdefault(key, _Lane())
        lane.came_back += 1
        waiting = _Waiting(items, asyncio.get_running_loop().create_future())
        lane.waiting.append(waiting)
        self._dispatch(key, lane)
        try:
            results, trace = await asyncio.shield(waiting.future)
        except asyncio.CancelledError:
            if waiting in lane.waiting:  # gone before its call left: it will not be sent
                lane.waiting.remove(waiting)
                if not lane.waiting:  # nobody left to wait for company (a pending timer finds nothing to send)
                    lane.hold_until = None
            raise
        request_trace.extend(trace)  # the routing record of the call this request rode in
        return results

    def _dispatch(self, key: Hashable, lane: _Lane[Item]) -> None:
        if lane.timer is not None:  # whatever it waited for is decided now
            lane.timer.cancel()
            lane.timer = None
        while lane.waiting and lane.in_flight < self.max_in_flight:
            if self._wait_for_company(key, lane):
                return
            batch = self._take(lane)
            lane.in_flight += 1
            self.calls += 1
            task = asyncio.get_running_loop().create_task(self._run(key, lane, batch))
            self._tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)

    def _wait_for_company(self, key: Hashable, lane: _Lane[Item]) -> bool:
        """True (and a timer set) while fewer requests wait than were in play when the last call ended, for at most
        `max_wait_s` from the moment the slot could have taken them."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.max_wait_s <= 0 or now < lane.paused_until or len(lane.waiting) >= lane.expected \
                or sum(len(waiting.items) for waiting in lane.waiting) >= self.max_items:
            lane.hold_until = None
            return False
        if lane.hold_until is None:
            lane.hold_until = now + self.max_wait_s
        elif now >= lane.hold_until:
            lane.hold_until = None
            if lane.came_back < COME_BACK_SHARE * lane.answered:  # these clients do not come back together
                lane.paused_until = now + self.pause_s
            return False
        lane.timer = loop.call_at(lane.hold_until, self._dispatch, key, lane)
        return True

    def _take(self, lane: _Lane[Item]) -> list[_Waiting[Item]]:
        """The longest run of waiting requests, oldest first, that fits in one call (at least one request)."""
        batch = [lane.waiting.pop(0)]
        size = len(batch[0].items)
        while lane.waiting and size + len(lane.waiting[0].items) <= self.max_items:
            size += len(lane.waiting[0].items)
            batch.append(lane.waiting.pop(0))
        return batch

    async def _run(self, key: Hashable, lane: _Lane[Item], batch: list[_Waiting[Item]]) -> None:
        try:
            await self._answer(key, batch)
        finally:
            lane.in_flight -= 1
            lane.expected = len(batch) + len(lane.waiting)
            lane.answered, lane.came_back = len(batch), 0
            if lane.waiting:
                self._dispatch(key, lane)
            elif not lane.in_flight and self.max_wait_s <= 0:  # nothing to remember for the next call
                self._lanes.pop(key, None)

    async def _answer(self, key: Hashable, batch: list[_Waiting[Item]]) -> None:
        request_trace.start()  # this task's own trace (a copy of the context): handed to every request it carries
        merged = [item for waiting in batch for item in waiting.items]
        try:
            results = await self._call(key, merged)
        except EduserveError as exc:
            if exc.code in INPUT_ERRORS and len(batch) > 1:
                await asyncio.gather(*(self._answer(key, [waiting]) for waiting in batch))
                return
            return self._fail(batch, exc)
        except Exception as exc:  # whatever the call raised reaches each request as if it had made the call
            return self._fail(batch, exc)
        except asyncio.CancelledError:  # the replica is shutting down: nobody waits forever
            for waiting in batch:
                waiting.future.cancel()
            raise
        trace = request_trace.entries()
        offset = 0
        for waiting in batch:
            end = offset + len(waiting.items)
            if not waiting.future.done():
                waiting.future.set_result((results[offset:end], trace))
            offset = end

    @staticmethod
    def _fail(batch: list[_Waiting[Item]], exc: BaseException) -> None:
        for waiting in batch:
            if not waiting.future.done():
                waiting.future.set_exception(exc)

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "calls": self.calls,
                "requests_per_call": round(self.requests / self.calls, 2) if self.calls else None}
