"""Usage reports from the per-minute aggregates: a caller's own (`/v2/usage`) and the admin's (`/v2/admin/usage`,
by user, API key, course collection, role, model, kind and period)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from serve_app.errors import EduserveError, ErrorCode
from serve_app.services.usage import UsageMeter
from serve_app.storage.db import Database

GROUP_COLUMNS = {
    "user": ("u.user_id::text AS user_id", "us.email AS email"),
    "api_key": ("nullif(u.api_key, '') AS api_key",),
    "collection": ("c.name AS collection",),
    "role": ("u.role AS role",),
    "model": ("u.model AS model",),
    "kind": ("u.kind AS kind",),
}
PERIOD_FORMAT = {"day": "YYYY-MM-DD", "month": "YYYY-MM"}
SUMS = ("sum(u.requests)::bigint AS requests, sum(u.prompt_tokens)::bigint AS prompt_tokens,"
        " sum(u.completion_tokens)::bigint AS completion_tokens, sum(u.documents)::bigint AS documents,"
        " coalesce(sum(u.audio_seconds), 0)::float8 AS audio_seconds")
MAX_DAYS = 366


def date_range(start: date | None, end: date | None) -> tuple[date, date]:
    """Inclusive UTC dates; by default the last 30 days."""
    end = end or datetime.now(UTC).date()
    start = start or end - timedelta(days=29)
    if start.year < 1970 or end.year > 9998:
        raise EduserveError(ErrorCode.VALIDATION_ERROR, "dates: between 1970 and 9998", param="start")
    if start > end:
        raise EduserveError(ErrorCode.VALIDATION_ERROR, "start: must not be after end", param="start")
    if (end - start).days >= MAX_DAYS:
        raise EduserveError(ErrorCode.VALIDATION_ERROR, f"at most {MAX_DAYS} days per report", param="start")
    return start, end


def _counts(row: dict[str, Any]) -> dict[str, Any]:
    counts = {name: int(row[name] or 0) for name in ("requests", "prompt_tokens", "completion_tokens", "documents")}
    return {**counts, "total_tokens": counts["prompt_tokens"] + counts["completion_tokens"],
            "audio_seconds": round(float(row["audio_seconds"] or 0.0), 3)}


def _row(row: dict[str, Any]) -> dict[str, Any]:
    counts = _counts(row)
    return {**{key: value for key, value in row.items() if key not in counts}, **counts}


class UsageReports:
    def __init__(self, db: Database, meter: UsageMeter):
        self.db = db
        self.meter = meter

    async def report(self, start: date | None, end: date | None, group_by: list[str], period: str, *,
                     user_id: str | None = None, api_key: str | None = None,
                     collection: str | None = None) -> dict[str, Any]:
        start, end = date_range(start, end)
        await self.meter.flush()  # what this replica counted is in the answer (other replicas write each second)
        args: list[Any] = [datetime(start.year, start.month, start.day, tzinfo=UTC),
                           datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)]
        where = ["u.minute >= $1", "u.minute < $2"]
        for value, condition in ((user_id and uuid.UUID(user_id), "u.user_id = ${}"), (api_key, "u.api_key = ${}"),
                                 (collection, "u.user_id IN (SELECT m.user_id FROM collection_members m JOIN"
                                              " collections k ON k.id = m.collection_id WHERE k.name = ${})")):
            if value is not None:
                args.append(value)
                where.append(condition.format(len(args)))
        group_by = list(dict.fromkeys(group_by))
        columns = [column for name in group_by for column in GROUP_COLUMNS[name]]
        if period in PERIOD_FORMAT:
            columns.insert(0, f"to_char(u.minute AT TIME ZONE 'UTC', '{PERIOD_FORMAT[period]}') AS period")
        joins = ""
        if "user" in group_by:
            joins += " LEFT JOIN users us ON us.id = u.user_id"
        if "collection" in group_by:  # a student in two courses counts in both
            joins += (" JOIN collection_members cm ON cm.user_id = u.user_id"
                      " JOIN collections c ON c.id = cm.collection_id AND c.kind = 'course'")
        conditions = " AND ".join(where)
        grouped = ", ".join(str(i) for i in range(1, len(columns) + 1))
        query = (f"SELECT {', '.join([*columns, SUMS])} FROM usage_minutes u{joins} WHERE {conditions}"
                 + (f" GROUP BY {grouped} ORDER BY {grouped}" if columns else ""))
        async with self.db.connection() as conn:
            rows = await conn.fetch(query, *args)
            totals = await conn.fetchrow(f"SELECT {SUMS} FROM usage_minutes u WHERE {conditions}", *args)
        data = [_row(dict(row)) for row in rows if row["requests"] is not None]
        return {"object": "usage_report", "start": start, "end": end, "group_by": group_by, "period": period,
                "data": data, "totals": _counts(dict(totals))}
