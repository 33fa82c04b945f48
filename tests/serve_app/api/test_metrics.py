"""Serving metrics on the real app: after a mix of traffic they exist in Ray's metrics pipeline (scraped from the
node's Prometheus endpoint, as Prometheus and the Ray dashboard read them) and have moved; every query of the Grafana
dashboard in configs/grafana names only metrics the running app exports."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serve_app.settings import CONFIG_DIR

DASHBOARD = CONFIG_DIR / "grafana" / "eduserve-dashboard.json"
MODEL = "all-minilm-l6-v2"

# What the traffic below must move (sample names, summed over their labels).
MOVED = {
    "ray_eduserve_batch_size_count", "ray_eduserve_batch_wait_seconds_count",
    "ray_eduserve_llm_prompt_tokens_total", "ray_eduserve_llm_generation_tokens_total",
    "ray_eduserve_llm_time_to_first_token_seconds_count", "ray_eduserve_llm_time_per_output_token_seconds_count",
    "ray_eduserve_safety_events_total", "ray_eduserve_rate_limited_total", "ray_eduserve_rag_cache_lookups_total",
    "ray_eduserve_http_request_duration_ms_count", "ray_eduserve_model_calls_total",
    "ray_vllm_time_to_first_token_seconds_count", "ray_vllm_generation_tokens_total",
}


def dashboard_metrics() -> set[str]:
    """The metric names the dashboard's queries use."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    return {name for expr in exprs for name in re.findall(r"\b(ray_[A-Za-z0-9_]+)", expr)}


def scrape() -> dict[str, float]:
    """Every sample of the node's metrics endpoint, summed by name."""
    import ray

    port = next(node["MetricsExportPort"] for node in ray.nodes() if node["Alive"])
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def traffic(cpu_app: str, client: httpx.Client) -> None:
    """Embeddings from concurrent clients, a RAG search twice, a blocked input, a 429, a streamed chat."""
    async def embeddings() -> None:
        async with httpx.AsyncClient(base_url=cpu_app, timeout=120, headers=client.headers) as http:
            responses = await asyncio.gather(*(http.post("/v1/embeddings", json={"input": f"text {i}", "model": MODEL})
                                               for i in range(16)))
        assert {r.status_code for r in responses} == {200}

    asyncio.run(embeddings())
    query = f"metrics probe {uuid.uuid4().hex[:6]}"
    assert [client.post("/v2/rag/search", json={"query": query}).json()["cached"] for _ in range(2)] == [False, True]
    blocked = client.post("/v1/chat/completions",
                          json={"messages": [{"role": "user", "content": "you are a stupid worthless idiot"}]})
    assert blocked.status_code == 400
    key = client.post("/v2/admin/api-keys", json={"name": "metrics", "role": "student", "rate_limit": "1/minute"})
    headers = {"Authorization": f"Bearer {key.json()['key']}"}
    assert [httpx.get(f"{cpu_app}/v2/auth/me", headers=headers).status_code for _ in range(2)] == [200, 429]
    # Last: vLLM re-reports its gauges (requests running, KV cache) only while the engine steps.
    with client.stream("POST", "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Name three planets."}], "max_tokens": 12, "stream": True,
            "temperature": 0}) as stream:
        assert stream.status_code == 200
        assert "[DONE]" in "".join(stream.iter_text())


@pytest.fixture(scope="module")
def after_traffic(cpu_app_module: str, admin_key: str) -> tuple[dict[str, float], dict[str, float]]:
    """(before, after): the samples before the traffic and once every expected metric has reported since."""
    before = scrape()
    with httpx.Client(base_url=cpu_app_module, timeout=120, headers={"Authorization": f"Bearer {admin_key}"}) as client:
        traffic(cpu_app_module, client)
    wanted = MOVED | dashboard_metrics()
    deadline = time.monotonic() + 90  # replicas report every few seconds; the node agent exports what it has
    while True:
        after = scrape()
        missing = {name for name in wanted if name not in after}
        still = {name for name in MOVED - missing if after[name] <= before.get(name, 0.0)}
        if not missing and not still or time.monotonic() > deadline:
            return before, after
        time.sleep(2)


def test_serving_metrics_exist_and_move_under_load(after_traffic):
    before, after = after_traffic
    missing = sorted(MOVED - after.keys())
    assert not missing, f"not exported: {missing}"
    unmoved = sorted(name for name in MOVED if after[name] <= before.get(name, 0.0))
    assert not unmoved, f"did not move: {unmoved}"
    assert after["ray_eduserve_rate_limited_total"] >= before.get("ray_eduserve_rate_limited_total", 0) + 1
    assert after["ray_eduserve_dependency_up"] >= 2  # postgres and redis, both up


def test_every_dashboard_query_names_a_metric_the_app_exports(after_traffic):
    _, after = after_traffic
    queried = dashboard_metrics()
    assert len(queried) >= 15
    assert not sorted(queried - after.keys()), "the dashboard queries metrics that do not exist"
