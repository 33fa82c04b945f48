"""What usage accounting and budget checks add to a request, on real PostgreSQL and Redis (embedded, local).

Each simulated request does what an ingress request does around its model call: the caller is bound, the
budget check runs (`UsageMeter.admit`), a model call is stood in for by a 5 ms sleep, and the usage is recorded
(`UsageMeter.record`). The added latency is the time spent in admit + record. Modes, each at 1 and 32
concurrent clients:

- `off`: accounting and budgets disabled (the baseline: the same code path, returning at once);
- `usage`: accounting on, the caller has no budget (the common case: no Redis call per request);
- `budget`: accounting on, the caller's API key and user both have budgets (one Redis MGET per request, one
  pipelined INCRBY per recorded call), the database flush running every second as in the app.

    .venv/bin/python bench/accounting.py --requests 3000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stack import local_stack, percentile, write_results  # noqa: E402
from serve_app.security.principal import Principal  # noqa: E402
from serve_app.services import usage  # noqa: E402
from serve_app.services.auth import insert_user
from serve_app.services.budgets import BudgetService  # noqa: E402
from serve_app.services.usage import Consumed, UsageMeter  # noqa: E402
from serve_app.settings import StorageSettings, UsageSettings  # noqa: E402
from serve_app.storage.cache import RedisLink  # noqa: E402
from serve_app.storage.db import Database  # noqa: E402

MODEL_CALL_S = 0.005


async def one_request(meter: UsageMeter, principal: Principal, added: list[float]) -> None:
    usage.bind(principal)
    start = time.perf_counter()
    await meter.admit()
    checked = time.perf_counter()
    await asyncio.sleep(MODEL_CALL_S)
    returned = time.perf_counter()
    meter.record("llm", "chat", Consumed(prompt_tokens=20, completion_tokens=30))
    added.append((checked - start) + (time.perf_counter() - returned))


async def client(meter: UsageMeter, principal: Principal, count: int, added: list[float]) -> None:
    for _ in range(count):
        await asyncio.create_task(one_request(meter, principal, added))  # a task per request, as in the app


async def run_mode(mode: str, overrides: dict, clients: int, requests: int) -> dict[str, float]:
    settings = UsageSettings(enabled=mode != "off", budgets_enabled=mode == "budget")
    storage = StorageSettings()
    db, redis = Database(overrides["database_url"], storage), RedisLink(overrides["redis_url"], storage)
    await db.open()
    meter = UsageMeter(settings)
    meter.open(db, BudgetService(db, redis, meter, settings) if mode != "off" else None)
    async with db.connection() as conn:
        user = (await insert_user(conn, f"{uuid.uuid4().hex[:8]}@bench.local", "x", "student", None))["id"]
    principal = Principal(user, "student", "api_key", str(uuid.uuid4()))
    if mode == "budget":
        await meter.budgets.put("api_key", principal.credential_id, {"tokens_per_day": 10**9}, user)
        await meter.budgets.put("user", user, {"tokens_per_minute": 10**9, "tokens_per_month": 10**9}, user)
    added: list[float] = []
    await client(meter, principal, 20, [])  # warm: limits cached, connections open
    started = time.perf_counter()
    await asyncio.gather(*(client(meter, principal, requests // clients, added) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    await meter.close()
    await db.close()
    await redis.close()
    return {"p50_ms": percentile(added, 0.5) * 1000, "p99_ms": percentile(added, 0.99) * 1000,
            "requests_per_s": len(added) / elapsed, "requests": len(added)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="per mode and concurrency")
    parser.add_argument("--out", default="bench/out/accounting.json")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with local_stack() as (overrides, _):
        for clients in (1, 32):
            for mode in ("off", "usage", "budget"):
                results[f"{mode}@{clients}"] = asyncio.run(run_mode(mode, overrides, clients, args.requests))
    for clients in (1, 32):
        base = results[f"off@{clients}"]
        for mode in ("usage", "budget"):
            figures = results[f"{mode}@{clients}"]
            figures["added_p50_ms"] = figures["p50_ms"] - base["p50_ms"]
            figures["added_p99_ms"] = figures["p99_ms"] - base["p99_ms"]
    write_results(results, args.out)


if __name__ == "__main__":
    main()
