"""Rate limits with the `limits` library: a moving window counted in Redis, shared by every replica; while Redis
is down, an in-memory window per replica takes over (a looser limit beats none).

Concurrent checks of one key in a replica share one Redis call (one in flight per key, the others wait for the
next): a caller at hundreds of requests a second costs a round trip per cohort, not per request (~90 µs of the
ingress's loop each), and the count is the same, since every hit is counted when it is admitted."""

from __future__ import annotations

import functools
import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from serve_app import metrics
from serve_app.coalesce import Coalescer
from serve_app.errors import EduserveError, ErrorCode
from serve_app.storage.cache import RedisLink

MAX_MERGED_HITS = 256

parse_limit = functools.lru_cache(maxsize=1024)(parse)


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
        self._merged_hits = Coalescer(self._hit_shared, MAX_MERGED_HITS)

    async def _hit_shared(self, key: tuple[str, tuple[str, ...]], hits: list[None]) -> list[bool | None]:
        """One verdict per merged hit: all of them in one call when the window has room; otherwise one at a time
        until the first refusal (as many admitted as fit, exactly as unmerged hits would be). None for each while
        Redis is down (the call before this one found it so): the local window decides, without another wait."""
        if not self.redis.available:
            return [None] * len(hits)
        item, keys = parse_limit(key[0]), key[1]
        try:
            if await self.shared.hit(item, *keys, cost=len(hits)):
                return [True] * len(hits)
            verdicts: list[bool | None] = [False] * len(hits)
            if len(hits) > 1:
                for index in range(len(hits)):
                    if not await self.shared.hit(item, *keys):
                        break
                    verdicts[index] = True
            return verdicts
        except Exception as exc:  # marked here, before the next merged call of any key can leave
            self.redis.mark_down(exc)
            raise

    async def _hit(self, limiter: MovingWindowRateLimiter, item: RateLimitItem, keys: tuple[str, ...],
                   allowed: bool | None = None) -> tuple[bool, float]:
        if allowed is None:
            allowed = await limiter.hit(item, *keys)
        reset = 0.0 if allowed else (await limiter.get_window_stats(item, *keys)).reset_time
        return allowed, reset

    async def check(self, limit: str, *keys: str) -> None:
        """Count one hit against `limit` for `keys`; raise 429 with Retry-After when over."""
        if not self.enabled:
            return
        item = parse_limit(limit)
        result = None
        if self.redis.available:
            try:
                [allowed] = await self._merged_hits.submit((limit, keys), [None])
                if allowed is not None:
                    result = await self._hit(self.shared, item, keys, allowed)
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
