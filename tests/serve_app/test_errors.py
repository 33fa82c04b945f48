"""The error list: one code per kind, mapped to a status once."""

from __future__ import annotations

from serve_app.errors import EduserveError, ErrorCode, error_body


def test_every_kind_is_distinct_and_an_http_error():
    assert len(ErrorCode) == len(ErrorCode.__members__)  # no aliases (same status must not merge two kinds)
    assert len({kind.code for kind in ErrorCode}) == len(ErrorCode)
    assert all(400 <= kind.status < 600 for kind in ErrorCode)


def test_error_body_shape():
    body = error_body(ErrorCode.DATABASE_UNAVAILABLE, "down")
    assert body == {"error": {"type": "server_error", "message": "down", "code": "database_unavailable"}}
    error = EduserveError(ErrorCode.RATE_LIMITED, "slow down", {"Retry-After": "3"})
    assert error.code.status == 429 and error.headers == {"Retry-After": "3"}
