"""Serve metrics of the model replicas, in Ray's metrics pipeline (the Ray dashboard, each node's Prometheus
endpoint). `ray.serve.metrics` adds the deployment, replica and application tags. Requests running and queued per
deployment are Serve's own (`ray_serve_replica_processing_queries`, `ray_serve_deployment_queued_queries`); the
vLLM engine's own metrics come beside these (backends/vllm_backend.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import cache, wraps
from typing import Any, TypeVar

logger = logging.getLogger("ray.serve.eduserve.metrics")

SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
TOKEN_SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256]

F = TypeVar("F", bound=Callable[..., None])


def never_fails(fn: F) -> F:
    """Recording a metric must never fail a request (e.g. outside a Ray worker). The first failure of each
    recorder is a warning, so a metric that cannot register (a reserved tag) is seen, not silently missing."""
    warned = False

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        nonlocal warned
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            logger.log(logging.DEBUG if warned else logging.WARNING, "metric not recorded by %s: %s",
                       fn.__qualname__, exc)
            warned = True

    return wrapper  # type: ignore[return-value]


@cache
def _metrics() -> dict[str, Any]:
    from ray.serve.metrics import Counter, Histogram

    return {
        "batch_size": Histogram("eduserve_batch_size", boundaries=SIZES,
                                description="Items per batched pass of a model replica (@serve.batch)."),
        "batch_wait": Histogram("eduserve_batch_wait_seconds", boundaries=SECONDS,
                                description="How long the oldest item of a batch waited for the batch to start."),
        "prompt_tokens": Counter("eduserve_llm_prompt_tokens_total",
                                 description="Prompt tokens the LLM replicas processed, any engine."),
        "generation_tokens": Counter("eduserve_llm_generation_tokens_total",
                                     description="Tokens the LLM replicas generated (streams: as far as they got)."),
        "ttft": Histogram("eduserve_llm_time_to_first_token_seconds", boundaries=SECONDS,
                          description="From a streamed request reaching the LLM replica to its first token."),
        "tpot": Histogram("eduserve_llm_time_per_output_token_seconds", boundaries=TOKEN_SECONDS,
                          description="Mean time between a stream's tokens after the first."),
    }


@never_fails
def record_batch(size: int, waited_s: float | None) -> None:
    metrics = _metrics()
    metrics["batch_size"].observe(size)
    if waited_s is not None:
        metrics["batch_wait"].observe(max(waited_s, 0.0))


@never_fails
def record_tokens(prompt: int, generated: int) -> None:
    if prompt:
        _metrics()["prompt_tokens"].inc(prompt)
    if generated:
        _metrics()["generation_tokens"].inc(generated)


class StreamTimer:
    """Time to first token and time per output token of one stream, recorded when it ends (any engine)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None
        self.last: float | None = None

    def tokens_arrived(self) -> None:
        self.last = time.perf_counter()
        if self.first is None:
            self.first = self.last

    @never_fails
    def finish(self, tokens: int) -> None:
        if self.first is None or self.last is None:
            return
        metrics = _metrics()
        metrics["ttft"].observe(self.first - self.started)
        if tokens > 1:
            metrics["tpot"].observe((self.last - self.first) / (tokens - 1))
