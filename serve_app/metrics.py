"""Serve metrics of the ingress (exported with Ray's metrics; scraped from each node's metrics port)."""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

logger = logging.getLogger("ray.serve.eduserve.metrics")


@cache
def _counters() -> dict[str, Any]:
    from ray.serve.metrics import Counter, Gauge, Histogram

    return {
        "http_latency": Histogram(
            "eduserve_http_request_duration_ms",
            description="Ingress request latency by route template, method and status.",
            boundaries=[5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000],
            tag_keys=("route", "method", "status"),
        ),
        "dependency_up": Gauge(
            "eduserve_dependency_up",
            description="1 when a storage dependency (postgres, redis) answers, 0 while degraded.",
            tag_keys=("dependency",),
        ),
        "routed": Counter(
            "eduserve_model_calls_total",
            description="Model calls by role, the tier that served them (gpu|cpu) and why it was chosen.",
            tag_keys=("role", "tier", "reason"),
        ),
        "breaker": Counter(
            "eduserve_breaker_transitions_total",
            description="Circuit breaker state changes per primary deployment.",
            tag_keys=("deployment", "state"),
        ),
    }


def _safe(fn):
    def wrapper(*args, **kwargs):
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # metrics must never fail a request (e.g. no Ray worker in a unit test)
            logger.debug("metric not recorded: %s", exc)

    return wrapper


@_safe
def record_route(role: str, tier: str, reason: str) -> None:
    _counters()["routed"].inc(tags={"role": role, "tier": tier, "reason": reason})


@_safe
def observe_request(route: str, method: str, status: int, duration_ms: float) -> None:
    _counters()["http_latency"].observe(duration_ms, tags={"route": route, "method": method, "status": str(status)})


@_safe
def set_dependency_up(dependency: str, up: bool) -> None:
    _counters()["dependency_up"].set(1.0 if up else 0.0, tags={"dependency": dependency})


@_safe
def breaker_listener(name: str, event_type: str, event: Any) -> None:
    """purgatory hook: count and log state changes (closed → opened → half-opened → closed)."""
    if event_type != "state_changed":
        return
    logger.warning("circuit breaker for %s is now %s", name, event.state)
    _counters()["breaker"].inc(tags={"deployment": name, "state": event.state})
