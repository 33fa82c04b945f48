from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from serve_app.api.deps import CurrentPrincipal, State, auth_ip_limit, client_ip
from serve_app.errors import EduserveError, ErrorCode, validation_field
from serve_app.protocol.auth import (
    LoginRequest,
    LogoutRequest,
    RefreshRequest,
    RegisterRequest,
    TokenResponse,
    UserOut,
)

router = APIRouter(prefix="/v2/auth", tags=["auth"])

LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": LoginRequest.model_json_schema()},
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {"username": {"type": "string", "description": "email"},
                                   "password": {"type": "string", "format": "password"}},
                }
            },
        },
    }
}


async def _login_fields(request: Request) -> LoginRequest:
    """JSON `{email, password}` or an OAuth2 password form (`username`, `password`)."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            return LoginRequest(email=str(form.get("username", "")), password=str(form.get("password", "")))
        return LoginRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        # Field names only, never values; a whole-body check (invalid text) also says what it found.
        fields = ", ".join(validation_field(e) if e["loc"] else f"{validation_field(e)}: {e['msg']}"
                           for e in exc.errors())
        raise EduserveError(ErrorCode.VALIDATION_ERROR, f"invalid login request: {fields}") from None


@router.post("/register", status_code=201, response_model=UserOut, dependencies=[Depends(auth_ip_limit)])
async def register(body: RegisterRequest, state: State):
    """Create a student account. Teacher and admin roles are granted by an admin (or `eduserve create-user`)."""
    return await state.auth.register(body.email, body.password, body.display_name)


@router.post("/login", response_model=TokenResponse, dependencies=[Depends(auth_ip_limit)], openapi_extra=LOGIN_BODY)
async def login(request: Request, state: State):
    """Exchange email and password for an access token (JWT) and a refresh token."""
    fields = await _login_fields(request)
    await state.limiter.check(
        state.settings.rate_limits.login_per_account, "login", client_ip(request), fields.email.lower()
    )
    return await state.auth.login(fields.email, fields.password, request.headers.get("user-agent"))


@router.post("/refresh", response_model=TokenResponse, dependencies=[Depends(auth_ip_limit)])
async def refresh(body: RefreshRequest, request: Request, state: State):
    """Rotate a refresh token: it is spent, a new pair is returned. Reusing a spent one revokes the sign-in."""
    return await state.auth.refresh(body.refresh_token, request.headers.get("user-agent"))


@router.post("/logout", status_code=204)
async def logout(principal: CurrentPrincipal, state: State, body: LogoutRequest | None = None):
    """Revoke this access token now, and the refresh tokens of this sign-in when one is given."""
    await state.auth.logout(principal, body.refresh_token if body else None)
    return Response(status_code=204)


@router.get("/me", response_model=UserOut)
async def me(principal: CurrentPrincipal, state: State):
    user = await state.auth.get_user(principal.user_id)
    if user is None:
        raise EduserveError(ErrorCode.UNAUTHORIZED, "the account no longer exists")
    return user


@router.delete("/me", status_code=204)
async def delete_me(principal: CurrentPrincipal, state: State):
    """Delete the account and everything it owns; its tokens stop working at once."""
    await state.auth.delete_user(principal.user_id)
    return Response(status_code=204)
