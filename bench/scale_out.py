"""Two ingress replicas on two nodes vs one, same load: requests/s and p50/p99.

A three-node Ray on this host (`ray.cluster_utils`): a head with no CPUs for replicas and two CPU workers, each
worker's proxy on a port of its own; PostgreSQL + pgvector and Redis as separate TCP servers (as on a cluster).
The cpu profile's models; the LLM on CTranslate2 (it is not under load here). Closed-loop clients, half on each
worker's proxy, on two routes:
- `GET /v2/auth/me` with a student JWT: the ingress alone (token check, revocation lookup, a PostgreSQL read);
- `POST /v1/embeddings` (one sentence, API key): the ingress plus the hop to the Embedder (one replica).
Baseline: one ingress replica (on one worker; the other worker's proxy forwards to it). Then two, one per worker.
On one host the nodes share 2 cores, so this measures what a second replica and its hops cost, not a speed-up.

Usage: .venv/bin/python bench/scale_out.py [--seconds 15] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stack import percentile  # noqa: E402


async def closed_loop(urls: list[str], clients: int, seconds: float, request) -> dict:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    deadline = time.perf_counter() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            response = await request(http)
            latencies.append(time.perf_counter() - t0)
            statuses[response.status_code] += 1

    pools = [httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients))
             for url in urls]
    started = time.perf_counter()
    await asyncio.gather(*(client(pools[i % len(pools)]) for i in range(clients)))
    elapsed = time.perf_counter() - started
    for pool in pools:
        await pool.aclose()
    return {
        "requests_per_s": round(sum(statuses.values()) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "status_codes": dict(statuses),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "scale_out.json"))
    args = parser.parse_args()

    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from bench._stack import write_results
    from serve_app.app import AppArgs, build_app
    from serve_app.bootstrap import create_api_key, create_user
    from serve_app.settings import load_settings
    from tests.gpu import LLM_ON_CPU
    from tests.support.servers import PostgresServer, RedisServer, free_port

    root = Path(tempfile.mkdtemp(prefix="eduserve-bench-scale-"))
    root.chmod(0o755)
    postgres, redis = PostgresServer(root / "postgres").start(), RedisServer(root / "redis").start()
    os.environ.update(DATABASE_URL=postgres.url, REDIS_URL=redis.url, EDUSERVE_AUTH__JWT_SECRET="bench-" + "k" * 40)
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "clients": args.clients, "seconds": args.seconds}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        ports = []
        for _ in range(2):
            ports.append(free_port())
            os.environ["RAY_SERVE_WORKER_PROXY_HTTP_PORT"] = str(ports[-1])
            cluster.add_node(num_cpus=3)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()}, proxy_location="EveryNode")
        urls = [f"http://127.0.0.1:{port}" for port in ports]

        base = {"offline": True, "storage": {"embedding_dimensions": 384}, "rate_limits": {"enabled": False},
                "models": {"llm": LLM_ON_CPU, "translator": None}}
        settings = load_settings("cpu", base)
        asyncio.run(create_user(settings, "bench@bench.local", "Load-test-only-123", "admin"))
        key = asyncio.run(create_api_key(settings, "bench@bench.local", "bench", "admin"))["key"]
        for replicas in (1, 2):
            overrides = {**base, "ingress": {"num_replicas": replicas, "max_replicas_per_node": 1, "num_cpus": 0.5}}
            serve.run(build_app(AppArgs(profile="cpu", overrides=overrides)), name="eduserve", route_prefix="/")
            for url in urls:  # each proxy knows the app before the clock starts
                while httpx.get(f"{url}/healthz", timeout=30).status_code != 200:
                    time.sleep(1)
            login = httpx.post(f"{urls[0]}/v2/auth/login", timeout=60,
                               json={"email": "bench@bench.local", "password": "Load-test-only-123"})
            jwt = {"Authorization": f"Bearer {login.json()['access_token']}"}
            api_key = {"Authorization": f"Bearer {key}"}
            label = f"{replicas}_ingress"
            print(f"{label}: {args.clients} clients for {args.seconds:.0f}s per route ...", flush=True)
            results[label] = {
                "me": asyncio.run(closed_loop(urls, args.clients, args.seconds,
                                              lambda http, jwt=jwt: http.get("/v2/auth/me", headers=jwt))),
                "embeddings": asyncio.run(closed_loop(urls, args.clients, args.seconds, lambda http, auth=api_key: http.post(
                    "/v1/embeddings", headers=auth, json={"input": "one sentence to embed"}))),
            }
        for route in ("me", "embeddings"):
            one, two = results["1_ingress"][route], results["2_ingress"][route]
            results[f"ratio_{route}_two_vs_one"] = {
                "requests_per_s": round(two["requests_per_s"] / one["requests_per_s"], 2),
                "p99": round(two["p99_ms"] / one["p99_ms"], 2),
            }
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
        redis.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)
    write_results(results, args.out)


if __name__ == "__main__":
    main()
