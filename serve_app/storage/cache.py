"""Redis with graceful degradation, and a two-level cache: an in-process L1 (TTL + LRU) in front of Redis.

Redis is an accelerator here, never a dependency of correctness: when it fails, calls return their fallback
(a cache miss, a per-replica rate limit), the link stays marked down for `redis_retry_after_s` so requests do
not each wait for a timeout, and `/readyz` and a metric say so.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from cachetools import TLRUCache
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from serve_app import metrics
from serve_app.settings import StorageSettings

logger = logging.getLogger("ray.serve.eduserve.storage")

T = TypeVar("T")


class RedisLink:
    def __init__(self, url: str, settings: StorageSettings):
        self.url = url
        self.settings = settings
        self.client = aioredis.from_url(
            url,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
            health_check_interval=30,
            # A pooled connection that a restarted server closed fails once; the retry runs on a fresh one, so a
            # Redis that is back is not marked down again. A server still down refuses the retry at once, and a
            # stuck one (a timeout) is never waited out twice.
            retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
        )
        self.down_until = 0.0
        self.last_error: str | None = None

    @property
    def available(self) -> bool:
        return time.monotonic() >= self.down_until

    def mark_down(self, exc: BaseException) -> None:
        if self.last_error is None:
            logger.warning("Redis unavailable, degrading (cache misses, per-replica rate limits): %s", exc)
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.down_until = time.monotonic() + self.settings.redis_retry_after_s
        metrics.set_dependency_up("redis", False)

    def mark_up(self) -> None:
        if self.last_error is not None:
            logger.info("Redis is back")
        self.last_error = None
        metrics.set_dependency_up("redis", True)

    async def run(self, operation: Callable[[aioredis.Redis], Awaitable[T]], fallback: T) -> T:
        """`operation(client)`, or `fallback` while Redis is down or when it fails now."""
        if not self.available:
            return fallback
        try:
            result = await operation(self.client)
        except (RedisError, OSError, TimeoutError) as exc:
            self.mark_down(exc)
            return fallback
        if self.last_error is not None:
            self.mark_up()
        return result

    async def check(self) -> dict[str, Any]:
        """For /readyz: Redis down never makes the service unready, it makes it degraded."""
        if await self.run(lambda r: r.ping(), False):
            return {"ok": True, "degraded": False}
        return {"ok": True, "degraded": True, "error": self.last_error}

    async def close(self) -> None:
        await self.client.aclose()


def expires_after_ttl(_key: Any, value: tuple[Any, float], now: float) -> float:
    """`ttu` of a cachetools TLRUCache whose values are (value, ttl_s) pairs."""
    return now + value[1]


class TieredCache:
    """JSON values under `namespace:`; L1 holds each key for min(ttl, l1_ttl_s)."""

    def __init__(self, redis: RedisLink, settings: StorageSettings, namespace: str, l1_ttl_s: float | None = None):
        self.redis = redis
        self.namespace = namespace
        self.l1_ttl_s = min(settings.l1_ttl_s, l1_ttl_s) if l1_ttl_s is not None else settings.l1_ttl_s
        self.l1: TLRUCache = TLRUCache(maxsize=settings.l1_max_items, ttu=expires_after_ttl, timer=time.monotonic)

    def _key(self, key: str) -> str:
        return f"eduserve:{self.namespace}:{key}"

    async def get(self, key: str) -> Any | None:
        full = self._key(key)
        hit = self.l1.get(full)
        if hit is not None:
            return hit[0]

        async def read(r: aioredis.Redis) -> list[Any]:  # value and remaining TTL in one round trip
            async with r.pipeline(transaction=False) as pipe:
                return await pipe.get(full).pttl(full).execute()

        raw, ttl = await self.redis.run(read, [None, -1])
        if raw is None:
            return None
        value = json.loads(raw)
        l1_ttl = min(self.l1_ttl_s, ttl / 1000) if ttl and ttl > 0 else self.l1_ttl_s
        self.l1[full] = (value, l1_ttl)
        return value

    async def set(self, key: str, value: Any, ttl_s: float) -> None:
        full = self._key(key)
        self.l1[full] = (value, min(ttl_s, self.l1_ttl_s))
        payload = json.dumps(value)
        await self.redis.run(lambda r: r.set(full, payload, px=int(ttl_s * 1000)), None)

    async def delete(self, key: str) -> None:
        full = self._key(key)
        self.l1.pop(full, None)
        await self.redis.run(lambda r: r.delete(full), None)
