"""Rate limits with the `limits` library: a moving window counted in Redis, shared by every replica; while Redis
is down, an in-memory window per replica takes over (a looser limit beats none)."""

from __future__ import annotations

import math
import time

from limits import parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from serve_app import metrics
from serve_app.errors import EduserveError, ErrorCode
from serve_app.storage.cache import RedisLink


class RateLimiter:
    def __init__(self, redis: RedisLink, enabled: bool = True):
        self.redis = redis
        self.enabled = enabled
        storage = RedisStorage(
            "async+" + redis.url, implementation="redispy", wrap_exceptions=True,
            socket_timeout=redis.settings.redis_timeout_s, socket_connect_timeout=redis.settings.redis_timeout_s,
        )
        self.shared = MovingWindowRateLimiter(storage)
        self.local = MovingWindowRateLimiter(MemoryStorage())

    async def _hit(self, limiter: MovingWindowRateLimiter, item, keys) -> tuple[bool, float]:
        allowed = await limiter.hit(item, *keys)
        reset = 0.0 if allowed else (await limiter.get_window_stats(item, *keys)).reset_time
        return allowed, reset

    async def check(self, limit: str, *keys: str) -> None:
        """Count one hit against `limit` for `keys`; raise 429 with Retry-After when over."""
        if not self.enabled:
            return
        item = parse(limit)
        result = None
        if self.redis.available:
            try:
                result = await self._hit(self.shared, item, keys)
            except Exception as exc:  # limits wraps storage errors; any of them means "use the local window"
                self.redis.mark_down(exc)
        if result is None:
            result = await self._hit(self.local, item, keys)
        allowed, reset = result
        if not allowed:
            metrics.record_rate_limited(keys[0] if keys else "unnamed")
            retry_after = max(1, math.ceil(reset - time.time()))
            raise EduserveError(
                ErrorCode.RATE_LIMITED, f"rate limit exceeded ({limit}); retry in {retry_after}s",
                {"Retry-After": str(retry_after)},
            )
