"""Cross-cutting HTTP behaviour on the real app: request ids, timing, security headers, CORS."""

from __future__ import annotations

import re


def test_request_id_is_accepted_or_made_and_returned(anonymous):
    given = anonymous.get("/healthz", headers={"X-Request-ID": "client-abc-123"})
    assert given.headers["x-request-id"] == "client-abc-123"
    made = anonymous.get("/healthz")
    assert len(made.headers["x-request-id"]) >= 16
    assert made.headers["server-timing"].startswith("app;dur=")


def test_security_headers_on_api_responses(anonymous):
    response = anonymous.get("/healthz")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert "strict-transport-security" not in response.headers  # plain http


def test_docs_work_offline_with_a_csp_that_allows_only_the_apps_own_assets(anonymous):
    for page in ("/docs", "/redoc"):
        response = anonymous.get(page)
        assert response.status_code == 200
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "http" not in csp  # nothing from another origin may load
        assets = re.findall(r'(?:src|href)="([^"]+)"', response.text)
        assert assets and all(url.startswith("/") for url in assets), assets  # no CDN
        for url in assets:
            asset = anonymous.get(url)
            assert asset.status_code == 200 and len(asset.content) > 1000, url


def test_hsts_behind_a_tls_terminating_proxy(anonymous):
    response = anonymous.get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert response.headers["strict-transport-security"].startswith("max-age=31536000")


def test_errors_carry_the_headers_too(anonymous):
    response = anonymous.get("/v1/models")
    assert response.status_code == 401
    assert response.headers["x-content-type-options"] == "nosniff" and response.headers["x-request-id"]


def test_cors_allows_only_configured_origins(anonymous):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed = anonymous.options("/v1/embeddings", headers={"Origin": "https://app.example", **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    denied = anonymous.options("/v1/embeddings", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in denied.headers


def test_the_request_id_reaches_every_log_line_down_to_the_model_replica(client):
    """Serve propagates the request id through DeploymentHandle calls; our loggers live under `ray.serve`, so
    their lines carry it too. Look for it in the ingress's and the embedder's own log files."""
    import time
    from pathlib import Path

    import ray

    request_id = f"trace-{time.time_ns()}"
    assert client.post("/v1/embeddings", json={"input": "follow me"}, headers={"X-Request-ID": request_id}).status_code == 200
    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    deadline = time.monotonic() + 10
    found: set[str] = set()
    while time.monotonic() < deadline and not {"Ingress", "Embedder"} <= found:
        for path in logs.glob("replica_eduserve_*.log"):
            if request_id in path.read_text(errors="replace"):
                found.add(path.name.split("_")[2])
        time.sleep(0.2)
    assert {"Ingress", "Embedder"} <= found, found
