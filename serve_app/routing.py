"""Every call from the ingress to a model goes through a `ModelRouter`: GPU first, CPU when the GPU is saturated,
failing or missing, and Ray's failure modes and the replicas' refusals turned into the API's errors in one place.

Per role, a primary deployment (usually fractional GPUs) and an optional fallback deployment (CPU):
- saturation: the primary's `max_queued_requests` makes Serve refuse at once (`BackPressureError`), and an
  optional in-flight limit per ingress replica refuses before asking; either sends the call to the fallback
  immediately, not after a timeout;
- faults: a circuit breaker (purgatory) per primary opens after N consecutive failures or timeouts, sends all
  traffic to the fallback while open, lets a probe through after `breaker_reset_s` and closes on its success;
- a primary whose replica reports it found no usable GPU is skipped (configurable);
- streams fall back only before their first chunk: after that the client has part of an answer.
Every routed call is recorded for the response headers (x-eduserve-device) and in Serve metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from ray.exceptions import RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from deployments.spec import DeploymentSpec
from serve_app import metrics, request_trace
from serve_app.errors import EduserveError
from serve_app.model_config import RoutingPolicy
from serve_app.model_errors import PRIMARY_FAULTS, api_error, caused_by_input, checked

logger = logging.getLogger("ray.serve.eduserve.routing")


@dataclass
class Target:
    """One deployment of a role, as the ingress sees it."""

    spec: DeploymentSpec
    handle: DeploymentHandle
    _variants: dict[tuple[str | None, bool], DeploymentHandle] = field(default_factory=dict, repr=False)

    @property
    def transport(self) -> str:
        """How calls reach the replicas: "actor" (Ray actor calls, what eduserve runs: serve_app/serve_env.py) or
        "grpc" (Serve's throughput-optimised default)."""
        by_reference = getattr(getattr(self.handle, "handle_options", None), "_by_reference", None)
        if not isinstance(by_reference, bool):  # a handle of another kind
            return "unknown"
        return "actor" if by_reference else "grpc"

    def handle_for(self, model_id: str | None = None, stream: bool = False) -> DeploymentHandle:
        """The handle with these options, made once: `.options()` builds a new handle on every call. The model ids
        are the catalog's (a bounded set)."""
        key = (model_id, stream)
        if key not in self._variants:
            options: dict[str, Any] = {"multiplexed_model_id": model_id} if model_id else {}
            if stream:
                options["stream"] = True
            self._variants[key] = self.handle.options(**options) if options else self.handle
        return self._variants[key]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def tier(self) -> str:
        return self.spec.tier


class PrimaryHealth:
    """Whether a role's primary should take the next call: its circuit breaker (faults), its calls in flight
    (saturation) and, where the policy asks, a background probe of whether it runs on the device it asked for."""

    def __init__(self, role: str, primary: Target, fallback: Target | None, policy: RoutingPolicy,
                 breakers: AsyncCircuitBreakerFactory):
        self.role, self.primary, self.fallback, self.policy, self.breakers = role, primary, fallback, policy, breakers
        self.inflight = 0
        self.degraded: bool | None = None
        self._probed_at = 0.0
        self._probe: asyncio.Task | None = None

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1

    async def breaker(self):
        return await self.breakers.get_breaker(
            self.primary.name, threshold=self.policy.breaker_failure_threshold, ttl=self.policy.breaker_reset_s
        )

    def fallback_reason(self, exc: BaseException) -> str:
        if isinstance(exc, OpenedState):
            return "breaker_open"
        if isinstance(exc, BackPressureError):
            return "saturated"
        logger.warning("%s primary %s failed (%s); using %s", self.role, self.primary.name, type(exc).__name__,
                       self.fallback.name if self.fallback else "nothing")
        return "fault"

    def reason_to_skip(self) -> str | None:
        if self.policy.degraded_primary_is_unavailable:
            self._maybe_probe()
            if self.degraded:
                return "primary_degraded"
        limit = self.policy.primary_max_inflight
        if limit is not None and self.inflight >= limit:
            return "saturated"
        return None

    def _maybe_probe(self) -> None:
        """Refresh, in the background, whether the primary's replica runs on the device it asked for."""
        now = time.monotonic()
        if self._probe is not None and not self._probe.done():
            return
        if now - self._probed_at < self.policy.health_probe_period_s and self._probed_at:
            return
        self._probed_at = now
        self._probe = asyncio.get_running_loop().create_task(self._probe_primary())

    async def _probe_primary(self) -> None:
        try:
            info = await _call(self.primary, "info", (), {}, 10.0)
        except Exception as exc:  # an unreachable primary is the breaker's business, not the probe's
            logger.debug("%s primary probe failed: %s", self.role, exc)
            return
        degraded = bool(info.get("device", {}).get("degraded_reason"))
        if degraded and not self.degraded:
            logger.warning("%s primary %s runs without its GPU (%s); routing to %s", self.role,
                           self.primary.name, info["device"]["degraded_reason"],
                           self.fallback.name if self.fallback else "it anyway")
        self.degraded = degraded


class ModelRouter:
    def __init__(
        self,
        role: str,
        primary: Target,
        fallback: Target | None,
        policy: RoutingPolicy,
        call_timeout_s: float,
        breakers: AsyncCircuitBreakerFactory,
    ):
        self.role = role
        self.primary = primary
        self.fallback = fallback
        self.policy = policy
        self.call_timeout_s = call_timeout_s
        self.health = PrimaryHealth(role, primary, fallback, policy, breakers)
        self.counts: Counter[str] = Counter()

    # ------------------------------------------------------------------ plain calls

    async def call(self, method: str, *args: Any, timeout_s: float | None = None,
                   multiplexed_model_id: str | None = None, **kwargs: Any) -> Any:
        """Call `method` on the primary, or on the fallback when the primary cannot take it. With a
        `multiplexed_model_id`, Serve routes to a replica that has that model loaded when it can."""
        timeout_s = timeout_s or self.call_timeout_s
        kwargs = {**kwargs, "_model_id": multiplexed_model_id}

        async def on_primary() -> Any:
            with self.health.in_flight():
                return await _call(self.primary, method, args, kwargs, self.policy.primary_timeout_s)

        answered, result, target = await self._primary_first(on_primary)
        if not answered:
            result = await self._call_or_raise(target, method, args, kwargs, timeout_s)
        return checked(self.role, result)

    async def call_target(self, which: str, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        """Call one named deployment of the role directly (status and readiness checks; not recorded)."""
        target = self.primary if which == "primary" else self.fallback
        if target is None:
            raise ValueError(f"{self.role} has no {which} deployment")
        return await self._call_or_raise(target, method, args, {}, timeout_s or self.call_timeout_s)

    async def _call_or_raise(self, target: Target, method: str, args, kwargs, timeout_s: float) -> Any:
        try:
            return await _call(target, method, args, kwargs, timeout_s)
        except (BackPressureError, *PRIMARY_FAULTS) as exc:
            if isinstance(exc, RayTaskError) and not caused_by_input(exc):
                logger.error("%s %s failed: %s", self.role, target.name, exc)
            raise api_error(self.role, exc) from None

    # ------------------------------------------------------------------ streams

    async def stream(self, method: str, *args: Any, multiplexed_model_id: str | None = None,
                     **kwargs: Any) -> AsyncIterator[Any]:
        """Stream from the primary; fall back only if it fails before yielding its first chunk. A replica's Refusal
        is raised as its API error, first chunk or later."""
        kwargs = {**kwargs, "_model_id": multiplexed_model_id}

        async def on_primary() -> tuple[Any, Any]:
            chunks = _stream(self.primary, method, args, kwargs)
            try:
                return chunks, await asyncio.wait_for(anext(chunks, _END), self.policy.primary_timeout_s)
            except BaseException:
                chunks.cancel()
                raise

        answered, opened, target = await self._primary_first(on_primary)
        if not answered:
            async for chunk in _mapped(self.role, _stream(target, method, args, kwargs)):
                yield chunk
            return
        chunks, first = opened
        if first is _END:
            return
        try:
            first = checked(self.role, first)
        except EduserveError:
            chunks.cancel()
            raise
        yield first
        async for chunk in _mapped(self.role, chunks):
            yield chunk

    # ------------------------------------------------------------------ primary first, then the fallback

    async def _primary_first(self, on_primary: Callable[[], Awaitable[Any]]) -> tuple[bool, Any, Target]:
        """(True, what `on_primary` returned, primary) when the primary answered; (False, None, the deployment
        to use) otherwise: the primary alone when the role has no fallback, else the fallback when the primary is
        skipped (degraded, saturated, breaker open) or fails (a fault, counted by its breaker). An input the
        primary refused is the caller's mistake: raised, neither counted nor retried elsewhere."""
        if self.fallback is None:
            self._record(self.primary, "primary")
            return False, None, self.primary
        reason = self.health.reason_to_skip()
        if reason is None:
            rejected: RayTaskError | None = None
            try:
                async with await self.health.breaker():
                    try:
                        result = await on_primary()
                    except RayTaskError as exc:
                        if not caused_by_input(exc):
                            raise
                        rejected = exc  # the input's fault: not the breaker's business
            except (OpenedState, BackPressureError, *PRIMARY_FAULTS) as exc:
                reason = self.health.fallback_reason(exc)
            else:
                self._record(self.primary, "primary")
                if rejected is not None:
                    raise api_error(self.role, rejected) from None
                return True, result, self.primary
        self._record(self.fallback, reason)
        return False, None, self.fallback

    # ------------------------------------------------------------------ state

    def _record(self, target: Target, reason: str) -> None:
        self.counts[reason] += 1
        request_trace.record(self.role, target.tier, target.name)
        metrics.record_route(self.role, target.tier, reason)

    @property
    def primary_degraded(self) -> bool | None:
        return self.health.degraded

    async def breaker_state(self) -> str | None:
        """closed, opened or half-opened; None for a role without a fallback (it has no breaker)."""
        return (await self.health.breaker()).context.state if self.fallback is not None else None

    async def status(self) -> dict[str, Any]:
        breaker = await self.breaker_state()
        return {
            "primary": self.primary.name,
            "fallback": self.fallback.name if self.fallback else None,
            "breaker": breaker,
            "primary_degraded": self.primary_degraded,
            "transport": self.primary.transport,
            "inflight_primary": self.health.inflight,
            "counts": dict(self.counts),
        }


def _handle(target: Target, kwargs: dict[str, Any], stream: bool = False) -> tuple[Any, dict[str, Any]]:
    """The handle (with the multiplexed model id, when one is given) and the method's own kwargs."""
    kwargs = dict(kwargs)
    model_id = kwargs.pop("_model_id", None)
    return target.handle_for(model_id, stream), kwargs


async def _call(target: Target, method: str, args, kwargs, timeout_s: float) -> Any:
    handle, kwargs = _handle(target, kwargs)
    response = getattr(handle, method).remote(*args, **kwargs)
    try:
        return await asyncio.wait_for(_await(response), timeout_s)
    except TimeoutError:
        response.cancel()  # Serve cancels the request in the replica too
        raise


async def _await(response: Any) -> Any:
    return await response


def _stream(target: Target, method: str, args, kwargs) -> Any:
    handle, kwargs = _handle(target, kwargs, stream=True)
    return getattr(handle, method).remote(*args, **kwargs)


async def _mapped(role: str, chunks: Any) -> AsyncIterator[Any]:
    """Ray failures and a replica's refusals as API errors; and when the consumer stops early (client gone, or a
    refusal), the replica's generator is cancelled at once rather than left to run to the end."""
    exhausted = False
    try:
        async for chunk in chunks:
            yield checked(role, chunk)
        exhausted = True
    except (BackPressureError, *PRIMARY_FAULTS) as exc:
        exhausted = True
        raise api_error(role, exc) from None
    finally:
        if not exhausted:
            chunks.cancel()


_END = object()


def make_breakers() -> AsyncCircuitBreakerFactory:
    """Circuit breakers keyed by primary deployment name (threshold and reset time come from each role's policy).
    Backpressure is saturation, not a fault: it never counts towards opening a breaker."""
    factory = AsyncCircuitBreakerFactory(exclude=[BackPressureError])
    factory.add_listener(metrics.breaker_listener)
    return factory
