"""What the ingress replica holds once it has started: settings, the model catalog, one ModelRouter per role,
storage and the services, built together by `AppState.build` once storage is open (the app's lifespan calls it)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
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
from serve_app.services.completions import CompletionService
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


@dataclass
class Stores:
    db: Database
    redis: RedisLink
    supervisor: StoreSupervisor | None  # of the embedded stores, when this replica started them


async def open_stores(settings: Settings) -> Stores:
    """PostgreSQL and Redis at their URLs; without them (plain `serve run`, one machine) the embedded servers,
    started (or reused) here and kept running. The database is connected later, in `AppState.build`."""
    database_url, redis_url = (url.get_secret_value() if url is not None else None
                               for url in (settings.database_url, settings.redis_url))
    supervisor = None
    if database_url is None or redis_url is None:
        refuse_beyond_one_machine(settings.ingress.num_replicas, _alive_ray_nodes(), settings.unset_store_urls)
        embedded: list[Any] = []
        if database_url is None:
            embedded.append(EmbeddedPostgres(settings.data_dir))
            database_url = await asyncio.to_thread(embedded[-1].start)
        if redis_url is None:
            embedded.append(EmbeddedRedis(settings.data_dir))
            redis_url = await asyncio.to_thread(embedded[-1].start)
        supervisor = StoreSupervisor(embedded, settings.storage.supervise_interval_s)
        supervisor.start()
    return Stores(Database(database_url, settings.storage), RedisLink(redis_url, settings.storage), supervisor)


def build_routers(settings: Settings, handles: dict[str, dict[str, DeploymentHandle]]) -> dict[str, ModelRouter]:
    """One ModelRouter per role over its primary and fallback deployments, sharing the breakers."""
    breakers = make_breakers()
    routers: dict[str, ModelRouter] = {}
    for role, config in settings.models.roles().items():
        fallback = Target(config.fallback, handles[role]["fallback"]) if config.fallback else None
        routers[role] = ModelRouter(role, Target(config.primary, handles[role]["primary"]), fallback,
                                    config.routing, settings.ingress.model_call_timeout_s, breakers)
    return routers


@dataclass(eq=False)
class AppState:
    settings: Settings
    catalog: ModelCatalog
    routers: dict[str, ModelRouter]
    db: Database
    redis: RedisLink
    supervisor: StoreSupervisor | None
    tokens: TokenService
    usage: UsageMeter
    budgets: BudgetService
    usage_reports: UsageReports
    limiter: RateLimiter
    invalidations: Invalidations
    auth: AuthService
    embeddings: EmbeddingService
    rerank: RerankService
    chat: ChatService
    completions: CompletionService
    safety: SafetyService
    profiles: ProfileService
    content: ContentService
    collections: CollectionService
    documents: DocumentService
    rag: RagService
    chat_store: ChatStore
    sessions: ChatSessions
    status: ModelStatus
    _gauges: asyncio.Task | None = field(default=None, repr=False)

    @classmethod
    async def build(cls, settings: Settings, handles: dict[str, dict[str, DeploymentHandle]]) -> AppState:
        """Storage first (it may start the embedded servers), then every service once, each after what it uses.
        Long on purpose: the whole wiring of the ingress in one screen."""
        stores = await open_stores(settings)
        db, redis, storage = stores.db, stores.redis, settings.storage
        catalog, routers = ModelCatalog(settings.models.roles()), build_routers(settings, handles)
        usage = UsageMeter(settings.usage)
        budgets = BudgetService(db, redis, usage, settings.usage)
        usage.open(db, budgets)
        secret = settings.auth.jwt_secret.get_secret_value() if settings.auth.jwt_secret else None
        tokens = TokenService(settings.auth, secret)
        invalidations = Invalidations(redis, PrincipalCache(settings.auth.principal_cache_ttl_s))
        auth = AuthService(db, tokens, TieredCache(redis, storage, "revoked-jti"), settings.auth, invalidations)
        embeddings = EmbeddingService(routers["embedder"], catalog, settings.limits, settings.ingress, usage)
        rerank = RerankService(routers["reranker"], catalog, settings.limits, usage)
        chat = ChatService(routers["llm"], catalog, settings.chat, usage)
        safety = SafetyService(routers["safety"], db, settings.safety)
        profiles = ProfileService(db, TieredCache(redis, storage, "profile", l1_ttl_s=2.0))
        translator = None
        if "translator" in routers:
            translator = TranslatorClient(routers["translator"], catalog.multiplexed_of("translator"), usage)
        collections = CollectionService(db)
        rag = RagService(db, TieredCache(redis, storage, "rag-search"), collections, embeddings, rerank, settings.rag)
        # Session context changes on every turn and any replica may serve the next one: keep L1 copies short.
        chat_store = ChatStore(db, TieredCache(redis, storage, "chat-session", l1_ttl_s=2.0), settings.chat)
        state = cls(
            settings=settings, catalog=catalog, routers=routers, db=db, redis=redis, supervisor=stores.supervisor,
            tokens=tokens, usage=usage, budgets=budgets, usage_reports=UsageReports(db, usage),
            limiter=RateLimiter(redis, settings.rate_limits.enabled), invalidations=invalidations, auth=auth,
            embeddings=embeddings, rerank=rerank, chat=chat, completions=CompletionService(chat, safety, catalog),
            safety=safety, profiles=profiles,
            content=ContentService(chat, safety, profiles, routers["tts"], catalog.resolve("tts", None).name,
                                   settings.content, usage, translator),
            collections=collections, documents=DocumentService(db, collections, embeddings, settings.rag), rag=rag,
            chat_store=chat_store, sessions=ChatSessions(chat_store, chat, rag, safety, profiles, settings),
            status=ModelStatus(routers, catalog, embeddings, (db, redis), settings.ingress.readiness_timeout_s),
        )
        await state._start()
        return state

    async def _start(self) -> None:
        self.invalidations.start()
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
