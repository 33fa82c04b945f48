"""Versioned SQL migrations: files `migrations/NNNN_name.sql`, applied once each, in order, recorded with a
checksum in `schema_migrations`. A transaction-scoped advisory lock makes concurrent runs (several replicas
starting at once) wait for each other instead of racing.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("ray.serve.eduserve.storage")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
LOCK_KEY = 0x6564_7573_6572_7665  # "eduserve"


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def template(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    return [Migration(path.stem, path) for path in sorted(directory.glob("*.sql"))]


async def migrate(conn: Any, params: dict[str, Any], directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the versions applied by this call."""
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")}
        for migration in discover(directory):
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(f"migration {migration.version} was edited after it was applied")
                continue
            logger.info("applying migration %s", migration.version)
            await conn.execute(migration.template.format(**params))
            await conn.execute(
                "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)", migration.version, migration.checksum
            )
            applied_now.append(migration.version)
        dims = await conn.fetchval("SELECT value FROM eduserve_meta WHERE key = 'embedding_dimensions'")
        if dims is not None and int(dims) != int(params["embedding_dimensions"]):
            raise MigrationError(
                f"this database stores {dims}-dimensional embeddings but the profile's embedder makes "
                f"{params['embedding_dimensions']}: use another database (DATABASE_URL) for this profile"
            )
    return applied_now
