"""Serve metrics of the ingress (exported with Ray's metrics; scraped from each node's metrics port)."""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

logger = logging.getLogger("eduserve.routing")


@cache
def _counters() -> dict[str, Any]:
    from ray.serve.metrics import Counter

    return {
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
def breaker_listener(name: str, event_type: str, event: Any) -> None:
    """purgatory hook: count and log state changes (closed → opened → half-opened → closed)."""
    if event_type != "state_changed":
        return
    logger.warning("circuit breaker for %s is now %s", name, event.state)
    _counters()["breaker"].inc(tags={"deployment": name, "state": event.state})
