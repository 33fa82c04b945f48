"""A throwaway local stack for benchmarks: embedded PostgreSQL + Redis in a temporary directory, an admin API
key, and the settings overrides that point an app at them and at the prepared models (rate limits lifted: the
load is the point)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def local_stack(profile: str = "cpu"):
    # Imported here so that write_results and percentile need none of the app's dependencies.
    from serve_app.bootstrap import create_api_key, create_user
    from serve_app.settings import load_settings
    from serve_app.storage.embedded import EmbeddedPostgres, EmbeddedRedis

    data_dir = Path(tempfile.mkdtemp(prefix="eduserve-bench-"))
    models_dir = load_settings(profile).prepared_models_dir  # what `make models` prepared
    postgres, redis = EmbeddedPostgres(data_dir), EmbeddedRedis(data_dir)
    try:
        overrides: dict[str, Any] = {
            "data_dir": str(data_dir),
            "models_dir": str(models_dir),
            "database_url": postgres.start(),
            "redis_url": redis.start(),
            "storage": {"embedding_dimensions": 384},
            "rate_limits": {"enabled": False},
        }
        settings = load_settings(profile, overrides)
        asyncio.run(create_user(settings, "bench@bench.local", "Load-test-only-123", "admin"))
        key = asyncio.run(create_api_key(settings, "bench@bench.local", "bench", "admin"))["key"]
        yield overrides, {"Authorization": f"Bearer {key}"}
    finally:
        redis.stop()
        postgres.stop()


def write_results(results: dict[str, Any], out: str | Path) -> None:
    """Save a run's raw figures (what RESULTS.md quotes) and print them."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, nearest rank below."""
    values = sorted(values)
    return values[int(q * (len(values) - 1))]
