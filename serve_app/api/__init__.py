"""The FastAPI application, assembled in one place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline
from ray.serve.handle import DeploymentHandle
from starlette.middleware.cors import CORSMiddleware

from serve_app.api import health
from serve_app.api.deps import current_principal
from serve_app.api.v1 import audio, embeddings, models, moderations, rerank
from serve_app.api.v1 import chat as chat_v1
from serve_app.api.v2 import admin, auth, content, documents, profiles, rag, usage
from serve_app.api.v2 import chat as chat_v2
from serve_app.errors import install_error_handlers
from serve_app.middleware import (
    DOCS_ASSETS,
    BodySizeLimitMiddleware,
    NulInUrlMiddleware,
    RequestContextMiddleware,
    SecurityHeadersMiddleware,
)
from serve_app.protocol.common import ERROR_RESPONSES
from serve_app.settings import Settings
from serve_app.state import AppState
from serve_app.version import EDUSERVE_VERSION


def create_api(settings: Settings, handles: dict[str, dict[str, DeploymentHandle]]) -> FastAPI:
    """The app, assembled in one place (lifespan, routers, middleware, handlers). Long on purpose: the order of
    middleware and routers is the order requests meet them."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await AppState.build(settings, handles)  # storage opened, every service built
        app.state.eduserve = state
        try:
            yield
        finally:
            await state.shutdown()

    # Swagger UI and ReDoc from assets the app serves itself (fastapi-offline ships them): /docs works offline.
    app = FastAPIOffline(
        title="eduserve",
        version=EDUSERVE_VERSION,
        description="Model serving for an AI learning assistant: OpenAI-compatible /v1 and product /v2 routes.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        static_url=DOCS_ASSETS,
    )
    install_error_handlers(app)

    # Public: health, docs, and the auth entry points (each rate limited per IP).
    app.include_router(health.router)
    app.include_router(auth.router)
    # Everything else needs a JWT or an API key (and counts against the caller's rate limit).
    protected = [Depends(current_principal)]
    for router in (models.router, embeddings.router, rerank.router, chat_v1.router, audio.router,
                   moderations.router, chat_v2.router, documents.router, rag.router, content.router, profiles.router):
        app.include_router(router, dependencies=protected)
    app.include_router(admin.router)
    app.include_router(usage.router)

    http = settings.http
    if http.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=http.cors_allow_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "X-Eduserve-Device", "Retry-After"],
        )
    # An upload carries up to one document's worth of files (the route checks each file), plus multipart framing.
    upload_limit = settings.rag.max_document_bytes + 1024 * 1024
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.limits.max_body_bytes,
                       path_limits={"/v2/documents/upload": max(upload_limit, settings.limits.max_body_bytes)})
    app.add_middleware(NulInUrlMiddleware)
    app.add_middleware(SecurityHeadersMiddleware, hsts_max_age_s=http.hsts_max_age_s,
                       trust_forwarded_proto=http.trust_forwarded_proto)
    # Added last = runs first: the request id and timing cover everything below, including a 413.
    app.add_middleware(RequestContextMiddleware)
    return app
