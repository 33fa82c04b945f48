"""Serve metrics of the ingress (exported with Ray's metrics; scraped from each node's metrics port)."""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from deployments.metrics import never_fails

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
            tag_keys=("primary", "state"),  # Serve reserves `deployment` (the ingress's own)
        ),
        "breaker_state": Gauge(
            "eduserve_breaker_state",
            description="Circuit breaker of each primary deployment: 0 closed, 0.5 half-open (probing), 1 open.",
            tag_keys=("primary",),
        ),
        "safety": Counter(
            "eduserve_safety_events_total",
            description="Safety decisions by direction (input|output), category and action (blocked|redacted|...).",
            tag_keys=("direction", "category", "action"),
        ),
        "rate_limited": Counter(
            "eduserve_rate_limited_total",
            description="Requests refused with 429 by the limit they hit (principal, login, auth-ip, ...).",
            tag_keys=("limit",),
        ),
        "rag_cache": Counter(
            "eduserve_rag_cache_lookups_total",
            description="RAG search cache lookups by result (hit|miss): the hit ratio.",
            tag_keys=("result",),
        ),
    }


@never_fails
def record_route(role: str, tier: str, reason: str) -> None:
    _counters()["routed"].inc(tags={"role": role, "tier": tier, "reason": reason})


@never_fails
def observe_request(route: str, method: str, status: int, duration_ms: float) -> None:
    _counters()["http_latency"].observe(duration_ms, tags={"route": route, "method": method, "status": str(status)})


@never_fails
def set_dependency_up(dependency: str, up: bool) -> None:
    _counters()["dependency_up"].set(1.0 if up else 0.0, tags={"dependency": dependency})


@never_fails
def breaker_listener(name: str, event_type: str, event: Any) -> None:
    """purgatory hook: count and log state changes (closed → opened → half-opened → closed)."""
    if event_type != "state_changed":
        return
    logger.warning("circuit breaker for %s is now %s", name, event.state)
    _counters()["breaker"].inc(tags={"primary": name, "state": event.state})
    set_breaker_state(name, event.state)


BREAKER_STATES = {"closed": 0.0, "half-opened": 0.5, "opened": 1.0}


@never_fails
def set_breaker_state(primary: str, state: str) -> None:
    _counters()["breaker_state"].set(BREAKER_STATES.get(state, 1.0), tags={"primary": primary})


@never_fails
def record_safety_event(direction: str, category: str, action: str) -> None:
    _counters()["safety"].inc(tags={"direction": direction, "category": category, "action": action})


@never_fails
def record_rate_limited(limit: str) -> None:
    _counters()["rate_limited"].inc(tags={"limit": limit})


@never_fails
def record_rag_cache(hit: bool) -> None:
    _counters()["rag_cache"].inc(tags={"result": "hit" if hit else "miss"})
