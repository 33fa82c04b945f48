"""`/v2/auth/*` and `/v2/admin/api-keys` schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from serve_app.protocol.common import StrictRequest
from serve_app.protocol.usage import BudgetIn, BudgetOut

Role = Literal["student", "teacher", "admin"]
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$"


class RegisterRequest(StrictRequest):
    email: str = Field(pattern=EMAIL_PATTERN, max_length=254)
    password: str = Field(min_length=1, max_length=1024, description="checked against the password policy")
    display_name: str | None = Field(None, max_length=100)


class LoginRequest(StrictRequest):
    email: str = Field(max_length=254)
    password: str = Field(max_length=1024)


class RefreshRequest(StrictRequest):
    refresh_token: str = Field(min_length=1, max_length=512)


class LogoutRequest(StrictRequest):
    refresh_token: str | None = Field(None, max_length=512, description="also revoke this session's refresh tokens")


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds until the access token expires")
    refresh_token: str
    refresh_expires_in: int


class UserOut(BaseModel):
    id: str
    email: str
    role: Role
    display_name: str | None = None
    created_at: datetime


class ApiKeyCreate(StrictRequest):
    name: str = Field(min_length=1, max_length=100)
    user_email: str | None = Field(None, description="owner; the calling admin when omitted")
    role: Role = "student"
    expires_in_days: int | None = Field(None, ge=1, le=3650)
    rate_limit: str | None = Field(
        None, max_length=64, examples=["20000/minute"],
        description="this key's own limit (`N/second|minute|hour|day`); the configured per-caller limit when omitted",
    )

    budget: BudgetIn | None = Field(None, description="this key's token budget (also settable later)")

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_notation(cls, value: str | None) -> str | None:
        return None if value is None else valid_rate_limit(value)


def valid_rate_limit(value: str) -> str:
    """A limit in the `limits` library's notation, at least one request per window (ValueError otherwise)."""
    from limits import parse

    try:
        item = parse(value)
    except ValueError:
        raise ValueError("use N/second, N/minute, N/hour or N/day, e.g. 20000/minute") from None
    if item.amount < 1:
        raise ValueError("a rate limit allows at least one request per window")
    return value


class ApiKeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    role: Role
    user_id: str
    created_at: datetime
    expires_at: datetime | None = None
    rate_limit: str | None = Field(None, description="this key's own limit; null: the configured per-caller limit")
    key: str | None = Field(None, description="the secret, shown only in the response that creates it")
    budget: BudgetOut | None = None
