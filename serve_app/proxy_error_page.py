"""The answer HAProxy gives when no ingress replica does: one died mid-request, or none is up yet.

Ray's HAProxy answers those cases (its 502, 503 and 504) with one error file it writes when it starts: a bare
`500 Internal Server Error` in plain text. eduserve answers them as it answers any dependency that is down: 503 with
`Retry-After`, in the one error shape. HAProxy reads the file whenever it reloads its config, which Ray does each
time the ingress replicas change, so each ingress replica writes it when it starts and puts it back from its health
check if a restarted HAProxy manager has rewritten it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from serve_app.errors import ErrorCode, error_body

logger = logging.getLogger("ray.serve.eduserve.ingress")

RETRY_AFTER_S = 2
MESSAGE = "no ingress replica answered this request (one stopped or is starting); retry it"


def error_page() -> bytes:
    body = json.dumps(error_body(ErrorCode.SERVICE_UNAVAILABLE, MESSAGE)).encode()
    head = (f"HTTP/1.1 {ErrorCode.SERVICE_UNAVAILABLE.status} Service Unavailable\r\n"
            "Content-Type: application/json\r\n"
            f"Retry-After: {RETRY_AFTER_S}\r\n"
            "Cache-Control: no-store\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def error_page_path() -> Path | None:
    """Where Ray's HAProxy reads its error file on this node; None when Serve runs without HAProxy."""
    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
        return None
    import ray
    from ray.serve._private.constants import RAY_SERVE_HAPROXY_CONFIG_FILE_LOC

    # Ray's HAProxy manager keeps each node's files in a folder named after the node, the page as `500.http`.
    node_id = ray.get_runtime_context().get_node_id()
    return Path(RAY_SERVE_HAPROXY_CONFIG_FILE_LOC).parent / node_id / "500.http"


def install_error_page() -> None:
    """Write eduserve's page over Ray's, when it is not there already. Never fails the replica."""
    path = error_page_path()
    if path is None:
        return
    page = error_page()
    try:
        if path.exists() and path.read_bytes() == page:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{os.getpid()}")
        staged.write_bytes(page)
        os.replace(staged, path)  # HAProxy never reads half a file
    except OSError as exc:
        logger.warning("could not write HAProxy's error page %s: %s", path, exc)
