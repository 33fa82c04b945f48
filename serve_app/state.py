"""What the ingress replica holds: settings, the model catalog, one ModelRouter per role, storage, the services."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray.serve.handle import DeploymentHandle

from serve_app import metrics
from serve_app.catalog import ModelCatalog
from serve_app.routing import ModelRouter, Target, make_breakers
from serve_app.security.principal_cache import Invalidations, PrincipalCache
from serve_app.security.ratelimit import RateLimiter
from serve_app.security.tokens import TokenService
from serve_app.services.auth import AuthService
from serve_app.services.budgets import BudgetService
from serve_app.services.chat import ChatService
from serve_app.services.chat_sessions import ChatSessions
from serve_app.services.chat_store import ChatStore
from serve_app.services.collections import CollectionService
from serve_app.services.content import ContentService, TranslatorClient
from serve_app.services.documents import DocumentService
from serve_app.services.embeddings import EmbeddingService
from serve_app.services.model_status import ModelStatus
from serve_app.services.profiles import ProfileService
from serve_app.services.rag import RagService
from serve_app.services.rerank import RerankService
from serve_app.services.safety import SafetyService
from serve_app.services.usage import UsageMeter
from serve_app.services.usage_reports import UsageReports
from serve_app.settings import Settings
from serve_app.storage.cache import RedisLink, TieredCache
from serve_app.storage.db import Database
from serve_app.storage.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    StoreSupervisor,
    refuse_beyond_one_machine,
)

logger = logging.getLogger("ray.serve.eduserve.ingress")

GAUGE_REPORT_INTERVAL_S = 5.0  # within Ray's export interval (10 s by default), so a gauge never lapses


def _alive_ray_nodes() -> int:
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive")) if ray.is_initialized() else 1


class AppState:
    def __init__(self, settings: Settings, handles: dict[str, dict[str, DeploymentHandle]]):
        self.settings = settings
        self.catalog = ModelCatalog(settings.models.roles())
        breakers = make_breakers()
        self.routers: dict[str, ModelRouter] = {}
        for role, config in settings.models.roles().items():
            fallback = Target(config.fallback, handles[role]["fallback"]) if config.fallback else None
            self.routers[role] = ModelRouter(
                role,
                Target(config.primary, handles[role]["primary"]),
                fallback,
                config.routing,
                settings.ingress.model_call_timeout_s,
                breakers,
            )
        # Counts from the first request; budgets and the writes to PostgreSQL start with storage, in `startup`.
        self.usage = UsageMeter(settings.usage)
        self.embeddings = EmbeddingService(self.routers["embedder"], self.catalog, settings.limits, settings.ingress,
                                           self.usage)
        self.rerank = RerankService(self.routers["reranker"], self.catalog, settings.limits, self.usage)
        self.chat = ChatService(self.routers["llm"], self.catalog, settings.chat, self.usage)
        secret = settings.auth.jwt_secret.get_secret_value() if settings.auth.jwt_secret else None
        self.tokens = TokenService(settings.auth, secret)
        # Storage is opened in `startup` (it may have to start embedded servers): set there.
        self.db: Database
        self.redis: RedisLink
        self.cache: TieredCache
        self.limiter: RateLimiter
        self.budgets: BudgetService
        self.usage_reports: UsageReports
        self.auth: AuthService
        self.invalidations: Invalidations
        self.chat_store: ChatStore
        self.sessions: ChatSessions
        self.collections: CollectionService
        self.documents: DocumentService
        self.rag: RagService
        self.safety: SafetyService
        self.profiles: ProfileService
        self.content: ContentService
        self.status: ModelStatus
        self.supervisor: StoreSupervisor | None = None  # of the embedded stores, when this replica started them
        self._gauges: asyncio.Task | None = None

    async def startup(self) -> None:
        database_url, redis_url = (url.get_secret_value() if url is not None else None
                                   for url in (self.settings.database_url, self.settings.redis_url))
        storage = self.settings.storage
        if database_url is None or redis_url is None:
            # Plain `serve run` without DATABASE_URL/REDIS_URL: start (or reuse) the embedded servers here, and
            # keep them running.
            refuse_beyond_one_machine(self.settings.ingress.num_replicas, _alive_ray_nodes(),
                                      self.settings.unset_store_urls)
            data_dir = self.settings.data_dir
            embedded: list[Any] = []
            if database_url is None:
                embedded.append(EmbeddedPostgres(data_dir))
                database_url = await asyncio.to_thread(embedded[-1].start)
            if redis_url is None:
                embedded.append(EmbeddedRedis(data_dir))
                redis_url = await asyncio.to_thread(embedded[-1].start)
            self.supervisor = StoreSupervisor(embedded, storage.supervise_interval_s)
            self.supervisor.start()
        self.db = Database(database_url, storage)
        self.redis = RedisLink(redis_url, storage)
        self.cache = TieredCache(self.redis, storage, "cache")
        self.limiter = RateLimiter(self.redis, self.settings.rate_limits.enabled)
        self.budgets = BudgetService(self.db, self.redis, self.usage, self.settings.usage)
        self.usage.open(self.db, self.budgets)
        self.usage_reports = UsageReports(self.db, self.usage)
        self.invalidations = Invalidations(self.redis, PrincipalCache(self.settings.auth.principal_cache_ttl_s))
        self.invalidations.start()
        self.auth = AuthService(self.db, self.tokens, TieredCache(self.redis, storage, "revoked-jti"), self.settings.auth,
                                self.invalidations)
        # Session context changes on every turn and any replica may serve the next one: keep L1 copies short.
        session_cache = TieredCache(self.redis, storage, "chat-session", l1_ttl_s=2.0)
        self.collections = CollectionService(self.db)
        self.documents = DocumentService(self.db, self.collections, self.embeddings, self.settings.rag)
        self.rag = RagService(self.db, TieredCache(self.redis, storage, "rag-search"), self.collections,
                              self.embeddings, self.rerank, self.settings.rag)
        self.safety = SafetyService(self.routers["safety"], self.db, self.settings.safety)
        self.profiles = ProfileService(self.db, TieredCache(self.redis, storage, "profile", l1_ttl_s=2.0))
        translator = None
        if "translator" in self.routers:
            translator = TranslatorClient(self.routers["translator"], self.catalog.multiplexed_of("translator"),
                                          self.usage)
        self.content = ContentService(self.chat, self.safety, self.profiles, self.routers["tts"],
                                      self.settings.content, self.usage, translator)
        self.chat_store = ChatStore(self.db, session_cache, self.settings.chat)
        self.sessions = ChatSessions(self.chat_store, self.chat, self.rag, self.safety, self.profiles, self.settings)
        self.status = ModelStatus(self.routers, self.catalog, self.embeddings, (self.db, self.redis),
                                  self.settings.ingress.readiness_timeout_s)
        if not await self.db.open():  # not fatal: requests that need it get 503 until it is back
            logger.error("starting without the database: %s", self.db.last_error)
        self._gauges = asyncio.create_task(self._report_gauges(), name="state-gauges")

    async def _report_gauges(self) -> None:
        """Ray exports a gauge only while it is re-reported (it drops a value after two export intervals): the
        storage and breaker gauges are set again every few seconds from what holds now."""
        while True:
            try:
                metrics.set_dependency_up("postgres", self.db.pool is not None and self.db.last_error is None)
                metrics.set_dependency_up("redis", self.redis.available and self.redis.last_error is None)
                for router in self.routers.values():
                    state = await router.breaker_state()
                    if state is not None:
                        metrics.set_breaker_state(router.primary.name, state)
            except Exception as exc:  # a metric is never worth the loop
                logger.debug("gauges not reported: %s", exc)
            await asyncio.sleep(GAUGE_REPORT_INTERVAL_S)

    async def shutdown(self) -> None:
        if self._gauges is not None:
            self._gauges.cancel()
        await self.invalidations.stop()
        await self.usage.close()  # before the stores go: the last counts are written
        if self.supervisor is not None:
            await asyncio.to_thread(self.supervisor.stop)
        await self.db.close()
        await self.redis.close()
