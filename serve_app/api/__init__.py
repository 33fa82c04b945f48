"""The FastAPI application, assembled in one place."""

from __future__ import annotations

from fastapi import FastAPI

from serve_app.api import health
from serve_app.api.v1 import embeddings, models, rerank
from serve_app.errors import install_error_handlers
from serve_app.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from serve_app.state import AppState

API_VERSION = "0.1.0"


def create_api(state: AppState) -> FastAPI:
    app = FastAPI(
        title="eduserve",
        version=API_VERSION,
        description="Model serving for an AI learning assistant: OpenAI-compatible /v1 and product /v2 routes.",
    )
    app.state.eduserve = state
    install_error_handlers(app)
    for router in (health.router, models.router, embeddings.router, rerank.router):
        app.include_router(router)
    # Added last = runs first: the request id exists before anything else, including a 413.
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=state.settings.limits.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    return app
