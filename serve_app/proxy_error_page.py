"""The answer HAProxy gives when no ingress replica does: one died mid-request, or none is up yet.

Ray's HAProxy answers those cases (its 502, 503 and 504) with one error file it writes when it starts: a bare
`500 Internal Server Error` in plain text. eduserve answers them as it answers any dependency that is down: 503 with
`Retry-After`, in the one error shape. HAProxy reads the file whenever it reloads its config, which Ray does each
time the ingress replicas change, so each ingress replica writes it when it starts, on its own node and (by a
zero-CPU task pinned to each) on every other node, since HAProxy runs on all of them; its health check puts its own
node's back if a restarted HAProxy manager has rewritten it, and covers nodes that joined since.
"""

from __future__ import annotations

import functools
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


def haproxy_folder() -> Path | None:
    """The folder of Ray's HAProxy files (each node's in a subfolder named after the node); None when Serve runs
    without HAProxy."""
    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
        return None
    from ray.serve._private.constants import RAY_SERVE_HAPROXY_CONFIG_FILE_LOC

    return Path(RAY_SERVE_HAPROXY_CONFIG_FILE_LOC).parent


def install_error_page(folder: Path | None = None) -> None:
    """Write eduserve's page over Ray's on this node (`folder`: Ray's HAProxy folder, found here when not given),
    when it is not there already. Never fails the caller."""
    import ray

    folder = folder or haproxy_folder()
    if folder is None:
        return
    path = folder / ray.get_runtime_context().get_node_id() / "500.http"  # Ray's name for the page
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


def install_error_page_on_every_node(done: set[str] | None = None, folder: Path | None = None,
                                     wait_s: float = 0.0) -> set[str]:
    """This node's page, and the page on every other alive node not in `done` (HAProxy runs on each node, and one
    with no ingress replica would answer with Ray's page), by a zero-CPU task pinned to the node. Waits up to
    `wait_s` for those tasks: an ingress replica waits at start, so the page is there when HAProxy reloads for it.
    Returns the nodes covered (with `done`). Never fails the caller."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folder = folder or haproxy_folder()
    done = set(done or ())
    if folder is None:
        return done
    install_error_page(folder)
    here = ray.get_runtime_context().get_node_id()
    try:
        others = [node["NodeID"] for node in ray.nodes()
                  if node.get("Alive") and node["NodeID"] != here and node["NodeID"] not in done]
        writes = [_remote_install().options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                  .remote(folder) for node in others]
        if wait_s > 0 and writes:
            ray.wait(writes, num_returns=len(writes), timeout=wait_s)
    except Exception as exc:  # a node gone meanwhile, the GCS slow: the next health check tries again
        logger.warning("could not write HAProxy's error page on the other nodes: %s", exc)
        return done | {here}
    return done | {here, *others}


@functools.cache
def _remote_install():
    import ray

    return ray.remote(num_cpus=0, max_retries=0)(install_error_page)
