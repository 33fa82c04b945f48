"""Where the CPU goes on the served embeddings path: eduserve deployed as `bench/embeddings.py --peer infinity`
deploys it, wrk at each level, and during the load CPU per process (psutil), the box's idle share, and optionally a
py-spy profile of the ingress and Embedder replicas (top functions by own and inclusive samples).

Usage: .venv/bin/python bench/profile_serving.py [--levels 8,32] [--seconds 15] [--py-spy] [--think-ms 100]
       [--overrides '{"ingress": {"coalesce_max_wait_ms": 0}}'] [--out F]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROLES = {"Ingress": "ingress", "Embedder": "embedder", "ProxyActor": "proxy", "ServeController": "controller"}


def serving_processes() -> dict[str, list[psutil.Process]]:
    """The Serve processes by role (replica titles carry the deployment name); everything else running before the
    load (Ray's own processes, the stores) is "rest"; wrk, started later, is not counted."""
    found: dict[str, list[psutil.Process]] = collections.defaultdict(list)
    for proc in psutil.process_iter(["cmdline", "name"]):
        title = " ".join(proc.info["cmdline"] or []) or (proc.info["name"] or "")
        role = next((name for marker, name in ROLES.items() if marker in title), None)
        if role is None and "haproxy" in title:
            role = "haproxy"
        if role is None and proc.pid != os.getpid():
            role = "rest"
        found[role or "bench driver"].append(proc)
    return found


def cpu_by_role(procs: dict[str, list[psutil.Process]], seconds: float) -> dict[str, float]:
    """Cores used per role over `seconds` (user + system time)."""
    def times() -> dict[int, float]:
        out = {}
        for group in procs.values():
            for proc in group:
                try:
                    t = proc.cpu_times()
                    out[proc.pid] = t.user + t.system
                except psutil.Error:
                    pass
        return out

    before = times()
    time.sleep(seconds)
    spent = {pid: cpu - before.get(pid, 0) for pid, cpu in times().items()}
    used: dict = {role: round(sum(spent.get(p.pid, 0) for p in group) / seconds, 3) for role, group in procs.items()}
    rest = sorted(procs.get("rest", []), key=lambda p: -spent.get(p.pid, 0))
    used["rest_top"] = {_short_name(p): round(spent[p.pid] / seconds, 3) for p in rest[:6] if spent.get(p.pid, 0) > 0}
    return used


def _short_name(proc: psutil.Process) -> str:
    try:
        cmdline = proc.cmdline()
    except psutil.Error:
        return str(proc.pid)
    words = [Path(word).name for word in cmdline[:3] if not word.startswith("-")] or [proc.name()]
    return f"{' '.join(words)[:60]} ({proc.pid})"


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far per thread of a process, as "name/tid" (py-spy dump names the Python ones by tid)."""
    out: dict[str, float] = collections.Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = f"{(task / 'comm').read_text().strip()}/{task.name}"
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[name] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return out


def top_functions(raw: Path, limit: int = 25) -> dict[str, list]:
    """From py-spy's collapsed stacks: the functions with most own samples, and most inclusive samples."""
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [frame.split(" (")[0] + " " + frame.split("/")[-1].rstrip(")") for frame in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    def share(counts: collections.Counter) -> list:
        return [(name, round(100 * n / total, 1)) for name, n in counts.most_common(limit)] if total else []

    return {"samples": total, "own_pct": share(own), "inclusive_pct": share(inclusive)}


def coalescing(url: str, headers: dict) -> dict:
    """The ingress's merged-call counters for the embedder (cumulative), from /v1/models."""
    import httpx

    for card in httpx.get(f"{url}/v1/models", headers=headers, timeout=30).json()["data"]:
        if card.get("role") == "embedder" and "coalescing" in card.get("status", {}):
            return card["status"]["coalescing"]
    return {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", default="8,32")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--py-spy", action="store_true", help="profile the ingress and Embedder during each level")
    parser.add_argument("--think-ms", type=float, default=0, help="each connection pauses this long on average "
                        "before a request (arrivals spread out, as from independent users)")
    parser.add_argument("--overrides", default="{}", help="JSON settings overrides for the app")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from bench._load import wrk_embeddings
    from bench._stack import write_results
    from bench.embeddings import served_with_auth

    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(), "levels": {}}
    with served_with_auth(json.loads(args.overrides)) as (url, headers):
        wrk_embeddings(f"{url}/v1/embeddings", 8, 3, headers)  # warm-up
        for clients in map(int, args.levels.split(",")):
            before = coalescing(url, headers)
            level = run_level(url, headers, clients, args.seconds, args.py_spy, args.think_ms)
            after = coalescing(url, headers)
            if before and after and after["calls"] > before["calls"]:
                level["requests_per_call"] = round(
                    (after["requests"] - before["requests"]) / (after["calls"] - before["calls"]), 2)
            results["levels"][clients] = level
            print(json.dumps({"clients": clients, "req_s": level["load"]["sentences_per_s"],
                              "p50_ms": level["load"]["p50_ms"], "per_call": level.get("requests_per_call"),
                              "cpu": level["cpu_cores"], "idle_pct": level["idle_pct"], "softirq_pct": level["softirq_pct"]}), flush=True)
    write_results(results, args.out or str(Path(__file__).parent / "out" / "profile_serving.json"))


def run_level(url: str, headers: dict, clients: int, seconds: float, py_spy: bool, think_ms: float = 0) -> dict:
    from bench._load import wrk_embeddings

    procs = serving_processes()
    level: dict = {}
    load = threading.Thread(target=lambda: level.update(load=wrk_embeddings(
        f"{url}/v1/embeddings", clients, seconds, headers, think_ms=think_ms)))
    load.start()
    time.sleep(1.0)
    procs = {**procs, "wrk": [p for p in psutil.process_iter(["name"]) if p.info["name"] == "wrk"]}  # the clients
    window = seconds - 2.5
    spies = []
    if py_spy:
        tmp = Path(tempfile.mkdtemp(prefix="eduserve-profile-"))  # kept: the raw stacks, for a closer look
        spy = Path(sys.executable).with_name("py-spy")
        for role in ("ingress", "embedder"):
            for proc in procs.get(role, [])[:1]:
                raw = tmp / f"{role}.txt"
                spies.append((role, raw, subprocess.Popen(
                    [str(spy), "record", "-p", str(proc.pid), "-d", str(int(window)), "-r", "200", "-f", "raw",
                     "-o", str(raw), "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    replicas = {role: procs[role][0].pid for role in ("ingress", "embedder") if procs.get(role)}
    threads_before = {role: thread_cpu(pid) for role, pid in replicas.items()}
    idle_before = psutil.cpu_times()
    level["cpu_cores"] = cpu_by_role(procs, window)
    idle_after = psutil.cpu_times()
    for role, pid in replicas.items():  # cores per thread name: native threads (Ray core, the runtime) included
        after = thread_cpu(pid)
        used = {name: round((after[name] - threads_before[role].get(name, 0)) / window, 3) for name in after}
        level[f"threads_{role}"] = dict(sorted(((n, c) for n, c in used.items() if c >= 0.005),
                                               key=lambda item: -item[1]))
    spent = sum(idle_after) - sum(idle_before)
    level["idle_pct"] = round(100 * (idle_after.idle - idle_before.idle) / spent, 1) if spent else None
    # the kernel's network stack, charged to no process
    level["softirq_pct"] = round(100 * (idle_after.softirq - idle_before.softirq) / spent, 1) if spent else None
    load.join()
    for role, raw, spy_proc in spies:
        spy_proc.wait(timeout=60)
        if raw.exists():
            level[f"profile_{role}"] = top_functions(raw)
    return level


if __name__ == "__main__":
    main()
