from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response

from serve_app.api.deps import State, require_role
from serve_app.errors import EduserveError, ErrorCode
from serve_app.protocol.auth import ApiKeyCreate, ApiKeyOut
from serve_app.security.principal import Principal

router = APIRouter(prefix="/v2/admin", tags=["admin"])
Admin = Annotated[Principal, require_role("admin")]


@router.post("/api-keys", status_code=201, response_model=ApiKeyOut)
async def create_api_key(body: ApiKeyCreate, admin: Admin, state: State):
    """A key for a service client, used as `Authorization: Bearer esk_...`. The secret is shown once."""
    owner_id = admin.user_id
    if body.user_email:
        owner = await state.auth.find_user_by_email(body.user_email)
        if owner is None:
            raise EduserveError(ErrorCode.NOT_FOUND, "no such user")
        owner_id = owner["id"]
    key = await state.auth.create_api_key(owner_id, body.name, body.role, body.expires_in_days, body.rate_limit)
    if body.budget is not None:
        key["budget"] = await state.budgets.put("api_key", key["id"], body.budget.model_dump(), admin.user_id)
    return key


@router.delete("/api-keys/{key_id}", status_code=204)
async def revoke_api_key(key_id: str, admin: Admin, state: State):
    try:
        revoked = await state.auth.revoke_api_key(key_id)
    except ValueError:
        revoked = False
    if not revoked:
        raise EduserveError(ErrorCode.NOT_FOUND, "no such active API key")
    return Response(status_code=204)
