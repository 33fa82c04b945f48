"""Usage reports (`/v2/usage`, `/v2/admin/usage`) and token budgets: per user and API key (admins), per course
collection (its teacher)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Response

from serve_app.api.deps import CurrentPrincipal, State, require_role
from serve_app.errors import EduserveError, ErrorCode
from serve_app.protocol.usage import BudgetIn, BudgetOut, GroupBy, Period, UsageReport
from serve_app.security.principal import Principal
from serve_app.state import AppState

router = APIRouter(tags=["usage"])
Admin = Annotated[Principal, require_role("admin")]
Start = Annotated[date | None, Query(description="first UTC day (default: 29 days before end)")]
End = Annotated[date | None, Query(description="last UTC day, inclusive (default: today)")]


@router.get("/v2/usage", response_model=UsageReport)
async def own_usage(principal: CurrentPrincipal, state: State, start: Start = None, end: End = None,
                    period: Period = "day"):
    """Your usage (your sign-ins and your API keys) by day and model; the same counts as the `usage` your
    responses reported."""
    return await state.usage_reports.report(start, end, ["model", "kind"], period, user_id=principal.user_id)


@router.get("/v2/admin/usage", response_model=UsageReport, tags=["admin"])
async def usage_report(
    admin: Admin, state: State, start: Start = None, end: End = None, period: Period = "day",
    group_by: Annotated[list[GroupBy], Query(description="repeat to group by several")] = ["user"],  # noqa: B006
    user_id: uuid.UUID | None = None, api_key_id: uuid.UUID | None = None,
    collection: Annotated[str | None, Query(max_length=200, description="a course collection's members")] = None,
):
    """Usage by user, API key, course collection (its members' usage), role, model and kind, per day or month."""
    return await state.usage_reports.report(
        start, end, group_by, period, user_id=str(user_id) if user_id else None,
        api_key=str(api_key_id) if api_key_id else None, collection=collection)


# ---------------------------------------------------------------------------------------------- budgets


async def _budget(state: AppState, scope: str, subject_id: str) -> BudgetOut:
    budget = await state.budgets.get(scope, subject_id)
    if budget is None:
        raise EduserveError(ErrorCode.NOT_FOUND, "no budget is set")
    return budget


async def _delete(state: AppState, scope: str, subject_id: str) -> Response:
    if not await state.budgets.delete(scope, subject_id):
        raise EduserveError(ErrorCode.NOT_FOUND, "no budget is set")
    return Response(status_code=204)


async def _existing_user(state: AppState, user_id: uuid.UUID) -> str:
    if await state.auth.get_user(str(user_id)) is None:
        raise EduserveError(ErrorCode.NOT_FOUND, "no such user")
    return str(user_id)


async def _existing_key(state: AppState, key_id: uuid.UUID) -> str:
    if not await state.auth.api_key_exists(str(key_id)):
        raise EduserveError(ErrorCode.NOT_FOUND, "no such API key")
    return str(key_id)


@router.put("/v2/admin/users/{user_id}/budget", response_model=BudgetOut, tags=["admin"])
async def set_user_budget(user_id: uuid.UUID, body: BudgetIn, admin: Admin, state: State):
    """A user's token budget: all their usage, through any sign-in or key."""
    return await state.budgets.put("user", await _existing_user(state, user_id), body.model_dump(), admin.user_id)


@router.get("/v2/admin/users/{user_id}/budget", response_model=BudgetOut, tags=["admin"])
async def get_user_budget(user_id: uuid.UUID, admin: Admin, state: State):
    return await _budget(state, "user", str(user_id))


@router.delete("/v2/admin/users/{user_id}/budget", status_code=204, tags=["admin"])
async def delete_user_budget(user_id: uuid.UUID, admin: Admin, state: State):
    return await _delete(state, "user", str(user_id))


@router.put("/v2/admin/api-keys/{key_id}/budget", response_model=BudgetOut, tags=["admin"])
async def set_key_budget(key_id: uuid.UUID, body: BudgetIn, admin: Admin, state: State):
    """An API key's token budget: the usage through this key."""
    return await state.budgets.put("api_key", await _existing_key(state, key_id), body.model_dump(), admin.user_id)


@router.get("/v2/admin/api-keys/{key_id}/budget", response_model=BudgetOut, tags=["admin"])
async def get_key_budget(key_id: uuid.UUID, admin: Admin, state: State):
    return await _budget(state, "api_key", str(key_id))


@router.delete("/v2/admin/api-keys/{key_id}/budget", status_code=204, tags=["admin"])
async def delete_key_budget(key_id: uuid.UUID, admin: Admin, state: State):
    return await _delete(state, "api_key", str(key_id))


@router.put("/v2/collections/{name}/budget", response_model=BudgetOut, tags=["documents"])
async def set_course_budget(name: str, body: BudgetIn, principal: CurrentPrincipal, state: State):
    """A course's token budget (its teacher or an admin): caps each enrolled student's usage; teachers and
    users outside the course are not affected."""
    course = await state.collections.owned_course(principal, name)
    return await state.budgets.put("collection", course, body.model_dump(), principal.user_id)


@router.get("/v2/collections/{name}/budget", response_model=BudgetOut, tags=["documents"])
async def get_course_budget(name: str, principal: CurrentPrincipal, state: State):
    return await _budget(state, "collection", await state.collections.owned_course(principal, name))


@router.delete("/v2/collections/{name}/budget", status_code=204, tags=["documents"])
async def delete_course_budget(name: str, principal: CurrentPrincipal, state: State):
    return await _delete(state, "collection", await state.collections.owned_course(principal, name))
