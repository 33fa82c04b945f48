"""Authenticated callers remembered for a few seconds per ingress replica, so a request with a known token or API
key skips the PostgreSQL lookup (and the Redis denylist read) that authenticating it again would cost.

Safety rests on two mechanisms, so that it holds when Redis is down:
- every entry expires after `ttl_s` (and never outlives its credential): the bound on how long a logout, a
  revoked key or a deleted account on another replica can go unnoticed here;
- a logout, a revoked key or a deleted account is announced on a Redis channel and every replica drops the
  matching entries at once; a replica that lost the channel drops everything when it resubscribes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Protocol

from cachetools import TLRUCache

from serve_app.security.tokens import hash_secret
from serve_app.storage.cache import RedisLink, expires_after_ttl

logger = logging.getLogger("ray.serve.eduserve.auth")

CHANNEL = "eduserve:auth:invalidate"


class Cached(Protocol):
    user_id: str
    credential_id: str
    expires_at: float | None  # when the credential itself stops being valid (epoch seconds)


class PrincipalCache:
    def __init__(self, ttl_s: float, max_items: int = 10_000):
        self.ttl_s = ttl_s
        self.entries: TLRUCache = TLRUCache(maxsize=max_items, ttu=expires_after_ttl, timer=time.monotonic)

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def get(self, credential: str) -> Any | None:
        if not self.enabled:
            return None
        hit = self.entries.get(hash_secret(credential))  # never the secret itself as a key in memory
        return hit[0] if hit is not None else None

    def put(self, credential: str, principal: Cached) -> None:
        """Keep `principal` for ttl_s, or until its credential expires, if sooner."""
        if not self.enabled:
            return
        ttl = self.ttl_s
        if principal.expires_at is not None:
            ttl = min(ttl, principal.expires_at - time.time())
        if ttl > 0:
            self.entries[hash_secret(credential)] = (principal, ttl)

    def drop(self, user_id: str | None = None, credential_id: str | None = None) -> int:
        """Forget every entry of a user, or of one credential (a token's jti, an API key's id)."""
        stale = [key for key, (principal, _) in list(self.entries.items())
                 if (user_id is not None and principal.user_id == user_id)
                 or (credential_id is not None and principal.credential_id == credential_id)]
        for key in stale:
            self.entries.pop(key, None)
        return len(stale)

    def clear(self) -> None:
        self.entries.clear()


class Invalidations:
    """The Redis channel on which replicas tell each other to drop cached principals."""

    def __init__(self, redis: RedisLink, cache: PrincipalCache, reconnect_s: float = 1.0):
        self.redis = redis
        self.cache = cache
        self.reconnect_s = reconnect_s
        self.task: asyncio.Task | None = None
        self.subscribed = asyncio.Event()

    async def announce(self, user_id: str | None = None, credential_id: str | None = None) -> None:
        """Drop here at once, then tell the other replicas (best effort: their entries expire anyway)."""
        self.cache.drop(user_id, credential_id)
        message = json.dumps({"user_id": user_id, "credential_id": credential_id})
        await self.redis.run(lambda r: r.publish(CHANNEL, message), 0)

    def start(self) -> None:
        if self.cache.enabled and self.task is None:
            self.task = asyncio.create_task(self._listen(), name="principal-cache-invalidations")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def _listen(self) -> None:
        while True:
            try:
                async with self.redis.client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    self.cache.clear()  # whatever was announced while we were not listening is lost: start afresh
                    self.subscribed.set()
                    while True:  # a bounded wait, not listen(): the client's 0.5 s socket timeout would end it
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                        if message is not None and message.get("type") == "message":
                            self._apply(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down or the connection lost: entries still expire within ttl_s
                if self.subscribed.is_set():
                    logger.warning("auth invalidation channel lost, cached principals now expire on TTL: %s", exc)
                self.subscribed.clear()
            await asyncio.sleep(self.reconnect_s)

    def _apply(self, data: bytes | str) -> None:
        try:
            message = json.loads(data)
            self.cache.drop(message.get("user_id"), message.get("credential_id"))
        except (ValueError, AttributeError):
            logger.warning("ignored a malformed auth invalidation message")
