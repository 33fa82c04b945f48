"""Pure ASGI middleware: request ids, timing, body size limit. Pure ASGI (not BaseHTTPMiddleware) so streamed
responses are not buffered."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app import metrics, request_trace
from serve_app.errors import ErrorCode, error_response

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")


class RequestContextMiddleware:
    """Puts the request id in `request.state.request_id`, adds `Server-Timing`, and the device headers of the
    model calls made (`x-eduserve-device`, `x-eduserve-route`).

    Serve's proxy already accepts a client's `X-Request-ID` (or makes one), passes it in the request headers
    and returns it on the response, so this only reads it; a malformed or missing one is replaced here.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed_ms = (time.perf_counter() - started) * 1000
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", f"app;dur={elapsed_ms:.1f}".encode()))
                headers.extend(request_trace.headers())
                message["headers"] = headers
            await send(message)

        token = request_trace.start(request_id)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            request_trace.reset(token)
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics.observe_request(route, scope["method"], status, (time.perf_counter() - started) * 1000)


DOCS_PATHS = ("/docs", "/redoc")
DOCS_ASSETS = "/docs/assets"  # Swagger UI's and ReDoc's scripts and styles, served by the app (works offline)
# The docs pages load those assets from here and run an inline bootstrap script; ReDoc renders in a blob worker.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; worker-src blob:; frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'"


class SecurityHeadersMiddleware:
    """nosniff, frame denial, no referrer, a CSP (looser on the docs pages so they still work), and HSTS on
    https requests (seen directly, or through X-Forwarded-Proto when a trusted proxy terminates TLS)."""

    def __init__(self, app: ASGIApp, hsts_max_age_s: int, trust_forwarded_proto: bool):
        self.app = app
        self.hsts = f"max-age={hsts_max_age_s}; includeSubDomains".encode() if hsts_max_age_s else None
        self.trust_forwarded_proto = trust_forwarded_proto

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"].startswith(DOCS_PATHS)
        https = scope.get("scheme") == "https" or (
            self.trust_forwarded_proto and _header(scope, b"x-forwarded-proto") == "https"
        )
        extra = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"content-security-policy", (DOCS_CSP if docs else API_CSP).encode()),
        ]
        if https and self.hsts:
            extra.append((b"strict-transport-security", self.hsts))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _BodyTooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    """413 in the error shape for bodies over the limit, declared (Content-Length) or streamed (chunked).
    `path_limits` gives some paths their own limit (file uploads)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, path_limits: dict[str, int] | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.path_limits = path_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"].removeprefix(scope.get("root_path", ""))  # as routed (Serve's route_prefix off)
        limit = self.path_limits.get(path, self.max_body_bytes)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, receive, send, limit)
            return

        received = 0
        rejected = False

        async def limited_receive() -> Message:
            # The 413 goes out from here: frameworks turn exceptions raised while reading the body into their
            # own 400, so whatever the app sends after this point is dropped.
            nonlocal received, rejected
            message = await receive()
            if message["type"] == "http.request" and not rejected:
                received += len(message.get("body", b""))
                if received > limit:
                    rejected = True
                    await self._reject(scope, receive, send, limit)
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if not rejected:
                await send(message)

        with contextlib.suppress(_BodyTooLarge):  # raised only after the 413 went out
            await self.app(scope, limited_receive, guarded_send)

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = error_response(ErrorCode.PAYLOAD_TOO_LARGE, f"request body larger than {limit} bytes")
        await response(scope, receive, send)


class NulInUrlMiddleware:
    """400 in the error shape for a path or query string holding a NUL character (`%00`): no route means one, and
    PostgreSQL cannot store it. Request bodies are checked by the protocol models (protocol.common.RequestModel)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")):
            routed = scope["path"].removeprefix(scope.get("root_path", ""))
            code = ErrorCode.BAD_REQUEST if routed.startswith("/v1/") else ErrorCode.VALIDATION_ERROR
            response = error_response(code, "the URL must not contain NUL characters (%00)")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None
