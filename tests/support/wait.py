"""Waiting for what a running app does in the background (replicas replaced, stores back, streams closed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout_s: float = 30, what: str = "condition", every_s: float = 0.25) -> T:
    """The first truthy value of `predicate()`, polled until `timeout_s`; an AssertionError naming `what` after."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


async def wait_for_async(predicate: Callable[[], Awaitable[T]], timeout_s: float = 30, what: str = "condition",
                         every_s: float = 0.25) -> T:
    """`wait_for` for a coroutine predicate, without blocking the event loop between polls."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = await predicate()
        if result:
            return result
        await asyncio.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
