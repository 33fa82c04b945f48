"""One list of error kinds, mapped to HTTP status once, and the handlers that give every failure one shape:

    {"error": {"type": "...", "message": "...", "code": "..."}}

`type` follows the OpenAI SDK's families (invalid_request_error, authentication_error, ...); `code` is the
precise, stable machine-readable reason.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("ray.serve.eduserve.errors")


class ErrorCode(Enum):
    """(code, HTTP status, error type) per kind of error. The only place a status code is chosen.
    The code string is part of each value so that two kinds with the same status never alias."""

    VALIDATION_ERROR = ("validation_error", 422, "invalid_request_error")
    BAD_REQUEST = ("bad_request", 400, "invalid_request_error")
    PAYLOAD_TOO_LARGE = ("payload_too_large", 413, "invalid_request_error")
    MODEL_NOT_FOUND = ("model_not_found", 404, "invalid_request_error")
    NOT_FOUND = ("not_found", 404, "not_found_error")
    METHOD_NOT_ALLOWED = ("method_not_allowed", 405, "invalid_request_error")
    UNSUPPORTED_MEDIA_TYPE = ("unsupported_media_type", 415, "invalid_request_error")
    UNAUTHORIZED = ("unauthorized", 401, "authentication_error")
    FORBIDDEN = ("forbidden", 403, "permission_error")
    RATE_LIMITED = ("rate_limited", 429, "rate_limit_error")
    BUDGET_EXCEEDED = ("budget_exceeded", 429, "insufficient_quota")  # OpenAI's type for a used-up quota
    OVERLOADED = ("overloaded", 503, "server_overloaded")
    MODEL_UNAVAILABLE = ("model_unavailable", 503, "server_error")
    DATABASE_UNAVAILABLE = ("database_unavailable", 503, "server_error")
    SERVICE_UNAVAILABLE = ("service_unavailable", 503, "server_error")  # no ingress replica answered
    CONFLICT = ("conflict", 409, "invalid_request_error")
    CONTEXT_LENGTH_EXCEEDED = ("context_length_exceeded", 400, "invalid_request_error")
    CONTENT_BLOCKED = ("content_blocked", 400, "invalid_request_error")
    UNKNOWN_VOICE = ("unknown_voice", 400, "invalid_request_error")
    UNPROCESSABLE_INPUT = ("unprocessable_input", 422, "invalid_request_error")
    MODEL_FAILED = ("model_failed", 503, "server_error")
    TIMEOUT = ("timeout", 504, "server_error")
    INTERNAL = ("internal", 500, "server_error")

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def status(self) -> int:
        return self.value[1]

    @property
    def type(self) -> str:
        return self.value[2]

    @classmethod
    def of(cls, code: object) -> ErrorCode | None:
        """The kind whose code string is `code` (as model replicas name their refusals), or None."""
        return next((kind for kind in cls if kind.code == code), None)


_STATUS_TO_CODE = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    409: ErrorCode.CONFLICT,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorCode.VALIDATION_ERROR,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.MODEL_UNAVAILABLE,
    504: ErrorCode.TIMEOUT,
}


class EduserveError(Exception):
    """Raise anywhere in the ingress; the handler turns it into the error shape and status."""

    def __init__(self, code: ErrorCode, message: str, headers: dict[str, str] | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.param = param  # the request field at fault, when one is (OpenAI's `param`)


def error_body(code: ErrorCode, message: str, param: str | None = None) -> dict[str, Any]:
    error = {"type": code.type, "message": message, "code": code.code}
    if param:
        error["param"] = param
    return {"error": error}


def error_response(code: ErrorCode, message: str, headers: dict[str, str] | None = None,
                   param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, param), status_code=code.status, headers=headers)


def validation_field(item: dict[str, Any]) -> str:
    """The field a validation error is about: its location, or the field a whole-body check (invalid text, which
    has no location of its own) put in its context; "body" when neither says."""
    loc = [str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path", "header")]
    return ".".join(loc) or (item.get("ctx") or {}).get("field") or "body"


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    """A readable message for the first errors, and the first field at fault."""
    parts, fields = [], []
    for item in exc.errors():
        if item.get("type") == "json_invalid":
            return f"request body is not valid JSON: {item.get('ctx', {}).get('error', 'parse error')}", None
        field = validation_field(item)
        fields.append(field)
        parts.append(f"{field}: {item.get('msg', 'invalid')}")
    return "; ".join(parts[:10]) or "invalid request", (fields[0] if fields and fields[0] != "body" else None)


async def _eduserve_error(_: Request, exc: EduserveError) -> JSONResponse:
    return error_response(exc.code, exc.message, exc.headers, exc.param)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 on the product routes; 400 on the OpenAI-compatible /v1 routes, as OpenAI and vLLM answer (the openai
    SDK raises BadRequestError for it)."""
    message, param = _describe_validation(exc)
    code = ErrorCode.BAD_REQUEST if request.url.path.startswith("/v1/") else ErrorCode.VALIDATION_ERROR
    return error_response(code, message, param=param)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _STATUS_TO_CODE.get(exc.status_code, ErrorCode.BAD_REQUEST if exc.status_code < 500 else ErrorCode.INTERNAL)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _unhandled_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(ErrorCode.INTERNAL, "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(EduserveError, _eduserve_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled_error)
