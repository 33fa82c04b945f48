"""FastAPI dependencies: the ingress state, the authenticated caller, roles and rate limits."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from serve_app.errors import EduserveError, ErrorCode
from serve_app.security.principal import Principal
from serve_app.security.tokens import unauthorized
from serve_app.services import usage
from serve_app.state import AppState

# Declares the scheme for OpenAPI (the Authorize button posts the form to /v2/auth/login); API keys are sent
# the same way, as `Authorization: Bearer esk_...`.
bearer = OAuth2PasswordBearer(tokenUrl="/v2/auth/login", auto_error=False)


def state_of(request: Request) -> AppState:
    return request.app.state.eduserve


async def get_state(request: Request) -> AppState:
    """As a dependency, async: FastAPI runs a plain `def` dependency on a worker thread, a thread hop per request
    (a quarter of the ingress's CPU under load, measured with py-spy)."""
    return state_of(request)


State = Annotated[AppState, Depends(get_state)]
"""The ingress's services and settings, as a route parameter."""


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def current_principal(
    request: Request, token: Annotated[str | None, Depends(bearer)]
) -> Principal:
    """Every protected route: a valid JWT or API key, then the caller's rate limit."""
    if not token:
        raise unauthorized("missing bearer token or API key")
    state = state_of(request)
    principal = await state.auth.authenticate(token)
    limit = principal.rate_limit or state.settings.rate_limits.per_principal
    await state.limiter.check(limit, "principal", principal.rate_key)
    request.state.principal = principal
    usage.bind(principal)  # this request's model calls are counted to it (and checked against its budgets)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_role(*roles: str):
    async def check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            raise EduserveError(ErrorCode.FORBIDDEN, f"requires role {' or '.join(roles)}")
        return principal

    return Depends(check)


async def auth_ip_limit(request: Request) -> None:
    """Per-IP limit on the unauthenticated auth entry points (register, login, refresh)."""
    state = state_of(request)
    await state.limiter.check(state.settings.rate_limits.auth_per_ip, "auth-ip", client_ip(request))
