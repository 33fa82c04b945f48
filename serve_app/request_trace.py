"""Which deployments served the current request, for the `x-eduserve-device` / `x-eduserve-route` headers.

The middleware starts a trace per request (a list in a ContextVar); the router appends to it. The list is
shared by reference, so entries made anywhere below the middleware in the same request are visible to it.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

_TRACE: ContextVar[list[tuple[str, str, str]] | None] = ContextVar("eduserve_route_trace", default=None)
_REQUEST_ID: ContextVar[str | None] = ContextVar("eduserve_request_id", default=None)


def start(request_id: str | None = None) -> tuple[Token, Token]:
    return _TRACE.set([]), _REQUEST_ID.set(request_id)


def reset(tokens: tuple[Token, Token]) -> None:
    _TRACE.reset(tokens[0])
    _REQUEST_ID.reset(tokens[1])


def request_id() -> str | None:
    """The current request's id (as returned in X-Request-ID), for records such as safety events."""
    return _REQUEST_ID.get()


def record(role: str, tier: str, deployment: str) -> None:
    trace = _TRACE.get()
    if trace is not None:
        trace.append((role, tier, deployment))


def entries() -> list[tuple[str, str, str]]:
    return list(_TRACE.get() or [])


def extend(entries: list[tuple[str, str, str]]) -> None:
    """Entries recorded elsewhere on this request's behalf (a call it shared with other requests)."""
    trace = _TRACE.get()
    if trace is not None:
        trace.extend(entries)


def headers() -> list[tuple[bytes, bytes]]:
    """`x-eduserve-device: gpu|cpu` (or `mixed`) and `x-eduserve-route: role=tier,...` for the calls made."""
    trace = _TRACE.get()
    if not trace:
        return []
    tiers = {tier for _, tier, _ in trace}
    device = tiers.pop() if len(tiers) == 1 else "mixed"
    route = ",".join(f"{role}={tier}" for role, tier, _ in trace)
    return [(b"x-eduserve-device", device.encode()), (b"x-eduserve-route", route.encode())]
