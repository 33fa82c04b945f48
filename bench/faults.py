"""Faults under load: the single-machine service as `eduserve run` starts it (embedded PostgreSQL and Redis,
supervised), a steady mix of clients, and one fault at a time.

Clients (closed loop): 4 × `POST /v1/embeddings` with an API key; 1 × `GET /v2/auth/me` with a live student JWT;
1 × the same with a signed-out JWT (must never get in); 1 × chat turns on a `/v2/chat` session (SSE, 16 tokens).
Phases, each `--observe` seconds of load: none (baseline), Redis killed (SIGKILL), PostgreSQL killed (SIGKILL of
the postmaster and its backends), the Embedder replica's process killed.

Per phase: requests started, answers by status, slowest answer, hung (no answer within 90 s), signed-out token accepted, chat turns
by ending (done / error / cut off without an end event), time until the store answers again, and time to
recover (the kill until the last failed request). After the run: lost = chat messages acknowledged (a stream that
started, or a `done`) that are not in the session's history.

Usage: .venv/bin/python bench/faults.py [--observe 45] [--out bench/out/faults.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stack import write_results  # noqa: E402
from serve_app.storage.embedded import EmbeddedPostgres, EmbeddedRedis  # noqa: E402
from tests.support.faults import kill_embedded_postgres, kill_embedded_redis  # noqa: E402

BASE = "http://127.0.0.1:8000"
HUNG_AFTER_S = 90.0  # past the ingress's own model call timeout (60 s): no answer by then is a hang
PASSWORD = "Fault-bench-pass-1"


class Load:
    """Every request's (start, end, client kind, outcome); outcome is a status code, "hung" or "conn-error"."""

    def __init__(self) -> None:
        self.records: list[tuple[float, float, str, int | str]] = []
        self.turns: list[tuple[float, str]] = []  # (start, ending) of chat turns
        self.acknowledged: list[str] = []  # user messages a started stream acknowledged (by content)
        self.done_ids: list[str] = []  # answers a `done` event reported
        self.stopping = False

    async def _request(self, kind: str, send) -> httpx.Response | None:
        start = time.monotonic()
        try:
            response = await asyncio.wait_for(send(), HUNG_AFTER_S)
        except TimeoutError:
            self.records.append((start, time.monotonic(), kind, "hung"))
            return None
        except httpx.HTTPError:
            self.records.append((start, time.monotonic(), kind, "conn-error"))
            await asyncio.sleep(0.2)
            return None
        self.records.append((start, time.monotonic(), kind, response.status_code))
        return response

    async def embeddings(self, http: httpx.AsyncClient, key: str, index: int) -> None:
        i = 0
        while not self.stopping:
            i += 1
            body = {"input": f"client {index} sentence {i}"}
            await self._request("embeddings", lambda body=body: http.post(
                "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {key}"}))

    async def me(self, http: httpx.AsyncClient, token: str, kind: str) -> None:
        while not self.stopping:
            await self._request(kind, lambda: http.get("/v2/auth/me", headers={"Authorization": f"Bearer {token}"}))
            await asyncio.sleep(0.05)

    async def chat(self, http: httpx.AsyncClient, token: str, session_id: str) -> None:
        auth = {"Authorization": f"Bearer {token}"}
        i = 0
        while not self.stopping:
            i += 1
            content = f"turn {i}: name one fact about rivers"
            start = time.monotonic()
            ending = "cut off"
            try:
                async with asyncio.timeout(HUNG_AFTER_S * 2):
                    async with http.stream("POST", f"/v2/chat/{session_id}/messages", headers=auth,
                                           json={"content": content, "max_tokens": 16, "temperature": 0}) as r:
                        self.records.append((start, time.monotonic(), "chat", r.status_code))
                        if r.status_code != 200:
                            ending = f"refused {r.status_code}"
                            await r.aread()
                        else:
                            self.acknowledged.append(content)
                            event = None
                            async for line in r.aiter_lines():
                                if line.startswith("event:"):
                                    event = line.split(":", 1)[1].strip()
                                elif line.startswith("data:") and event in ("done", "error"):
                                    ending = event
                                    if event == "done":
                                        self.done_ids.append(json.loads(line[5:])["message_id"])
            except TimeoutError:
                ending = "hung"
            except httpx.HTTPError:
                ending = "cut off"
            self.turns.append((start, ending))
            if ending != "done":
                await asyncio.sleep(0.5)


def start_service(data_dir: Path) -> subprocess.Popen:
    from serve_app.settings import load_settings

    env = {**os.environ, "EDUSERVE_DATA_DIR": str(data_dir), "EDUSERVE_RATE_LIMITS__ENABLED": "false",
           "EDUSERVE_MODELS_DIR": str(load_settings().prepared_models_dir)}  # what `make models` prepared
    log = (data_dir / "service.log").open("w")
    print(f"service log: {log.name}", flush=True)
    return subprocess.Popen([str(ROOT / ".venv/bin/eduserve"), "run"], env=env, cwd=ROOT, start_new_session=True,
                            stdout=log, stderr=subprocess.STDOUT)


def wait_ready(service: subprocess.Popen, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise RuntimeError("the service exited; see its log")
        try:
            if httpx.get(f"{BASE}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(3)
    raise RuntimeError("the service did not become ready")


def kill_embedder(_: Path) -> None:
    for process in psutil.process_iter(["cmdline"]):
        if any("ServeReplica:eduserve:Embedder" in part for part in process.info["cmdline"] or []):
            process.kill()
            return
    raise RuntimeError("no Embedder replica process found")


def summarize(load: Load, name: str, t0: float, t1: float, back_after_s: float | None) -> dict:
    window = [r for r in load.records if t0 <= r[0] < t1]
    outcomes: Counter[str] = Counter(str(r[3]) for r in window)
    failures = [r for r in window if r[3] not in (200, 201) and not (r[2] == "signed-out" and r[3] == 401)]
    return {
        "fault": name,
        "requests": len(window),
        "by_outcome": dict(sorted(outcomes.items())),
        "non_2xx_by_kind": dict(Counter(f"{r[2]} {r[3]}" for r in failures)),
        "hung": outcomes.get("hung", 0),
        "slowest_s": round(max((r[1] - r[0] for r in window), default=0.0), 1),
        "over_10_s": sum(1 for r in window if r[1] - r[0] > 10),
        "signed_out_token_accepted": sum(1 for r in window if r[2] == "signed-out" and r[3] == 200),
        "chat_turns": dict(Counter(ending for start, ending in load.turns if t0 <= start < t1)),
        "store_back_after_s": None if back_after_s is None else round(back_after_s, 1),
        "recovered_after_s": round(max(r[1] for r in failures) - t0, 1) if failures else 0.0,
    }


async def run(observe_s: float, data_dir: Path) -> dict:
    async with httpx.AsyncClient(base_url=BASE, timeout=None, limits=httpx.Limits(max_connections=32)) as http:
        demo = json.loads((data_dir / "demo_credentials.json").read_text())
        email = f"student-{int(time.time())}@bench.local"
        await http.post("/v2/auth/register", json={"email": email, "password": PASSWORD})
        live = (await http.post("/v2/auth/login", json={"email": email, "password": PASSWORD})).json()
        gone = (await http.post("/v2/auth/login", json={"email": email, "password": PASSWORD})).json()
        auth_gone = {"Authorization": f"Bearer {gone['access_token']}"}
        assert (await http.post("/v2/auth/logout", headers=auth_gone,
                                json={"refresh_token": gone["refresh_token"]})).status_code == 204
        session = (await http.post("/v2/chat", json={"title": "faults"},
                                   headers={"Authorization": f"Bearer {live['access_token']}"})).json()

        load = Load()
        clients = [asyncio.create_task(load.embeddings(http, demo["api_key"], i)) for i in range(4)]
        clients += [asyncio.create_task(load.me(http, live["access_token"], "me")),
                    asyncio.create_task(load.me(http, gone["access_token"], "signed-out")),
                    asyncio.create_task(load.chat(http, live["access_token"], session["id"]))]
        phases = []
        await asyncio.sleep(5)  # warm
        for name, kill, store in (("none", None, None),
                                  ("redis killed", kill_embedded_redis, EmbeddedRedis(data_dir)),
                                  ("postgres killed", kill_embedded_postgres, EmbeddedPostgres(data_dir)),
                                  ("embedder replica killed", kill_embedder, None)):
            t0 = time.monotonic()
            back_after = None
            if kill is not None:
                await asyncio.to_thread(kill, data_dir)
                print(f"{name}", flush=True)
            while time.monotonic() - t0 < observe_s:
                await asyncio.sleep(0.2)
                if store is not None and back_after is None and await asyncio.to_thread(store.alive):
                    back_after = time.monotonic() - t0
            phases.append(summarize(load, name, t0, time.monotonic(), back_after))
            print(json.dumps(phases[-1]), flush=True)
        load.stopping = True
        await asyncio.gather(*clients)

        await asyncio.sleep(10)  # answers kept while PostgreSQL was down are stored in the background
        messages, before = [], None
        while True:  # newest first, a page at a time
            params = {"limit": 200, **({"before": before} if before else {})}
            page = (await http.get(f"/v2/chat/{session['id']}", params=params,
                                   headers={"Authorization": f"Bearer {live['access_token']}"})).json()
            messages += page["messages"]
            before = page.get("next_before")
            if not before:
                break
        stored_users = {m["content"] for m in messages if m["role"] == "user"}
        stored_ids = {m["id"] for m in messages}
        answers = Counter(m["status"] for m in messages if m["role"] == "assistant")
        return {
            "phases": phases,
            "chat": {
                "user_messages_acknowledged": len(load.acknowledged),
                "user_messages_lost": sum(1 for c in load.acknowledged if c not in stored_users),
                "answers_reported_done": len(load.done_ids),
                "answers_reported_done_lost": sum(1 for i in load.done_ids if i not in stored_ids),
                "stored_answers_by_status": dict(answers),
            },
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--observe", type=float, default=45.0, help="seconds of load per phase")
    parser.add_argument("--out", default=str(ROOT / "bench/out/faults.json"))
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="eduserve-faults-"))
    service = start_service(data_dir)
    try:
        wait_ready(service)
        results = asyncio.run(run(args.observe, data_dir))
    finally:
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGINT)  # the run command stops Ray and the stores it started
            service.wait(timeout=120)
    results["date"] = time.strftime("%Y-%m-%d %H:%M")
    results["observe_s"] = args.observe
    write_results(results, args.out)


if __name__ == "__main__":
    main()
