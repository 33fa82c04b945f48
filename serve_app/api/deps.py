"""FastAPI dependencies: the ingress state, reached through the request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from serve_app.state import AppState


def get_state(request: Request) -> AppState:
    return request.app.state.eduserve
