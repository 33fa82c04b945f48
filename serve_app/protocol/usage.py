"""`/v2/usage`, `/v2/admin/usage` and token budget schemas."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from serve_app.protocol.common import StrictRequest

GroupBy = Literal["user", "api_key", "collection", "role", "model", "kind"]
Period = Literal["day", "month", "total"]
BudgetScope = Literal["api_key", "user", "collection"]


class BudgetIn(StrictRequest):
    """Tokens (prompt + completion; embedded and reranked text count as prompt) per UTC minute, day and month;
    a period left out has no limit."""

    tokens_per_minute: int | None = Field(None, ge=1, le=10**12)
    tokens_per_day: int | None = Field(None, ge=1, le=10**12)
    tokens_per_month: int | None = Field(None, ge=1, le=10**12)


class BudgetOut(BaseModel):
    scope: BudgetScope
    subject_id: str
    tokens_per_minute: int | None
    tokens_per_day: int | None
    tokens_per_month: int | None
    updated_at: datetime


class UsageCounts(BaseModel):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    documents: int = Field(description="reranked documents, translated texts")
    audio_seconds: float = Field(description="seconds of speech synthesised")


class UsageRow(UsageCounts):
    period: str | None = Field(None, description="YYYY-MM-DD or YYYY-MM (UTC); absent for `period=total`")
    user_id: str | None = None
    email: str | None = None
    api_key: str | None = Field(None, description="the API key's id; null for a user's own sign-in")
    collection: str | None = None
    role: str | None = None
    model: str | None = None
    kind: str | None = Field(None, description="chat, completion, embedding, rerank, speech, translation")


class UsageReport(BaseModel):
    object: Literal["usage_report"] = "usage_report"
    start: date
    end: date = Field(description="inclusive")
    group_by: list[GroupBy]
    period: Period
    data: list[UsageRow]
    totals: UsageCounts
