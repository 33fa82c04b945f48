"""Versioned migrations on a real PostgreSQL 18 + pgvector."""

from __future__ import annotations

import asyncio

import asyncpg
import numpy as np
import pytest
from pgvector.asyncpg import register_vector

from serve_app.storage.migrations import MigrationError, discover, migrate

PARAMS = {"embedding_dimensions": 384}
TABLES = {"users", "refresh_tokens", "api_keys", "chat_sessions", "chat_messages", "collections", "documents",
          "chunks", "student_profiles", "learning_events", "safety_events", "schema_migrations"}


async def test_migrations_run_twice_concurrently_without_error(fresh_database):
    connections = [await asyncpg.connect(fresh_database) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(conn, PARAMS) for conn in connections))
        versions = [m.version for m in discover()]
        # exactly one run applied everything; the others waited on the advisory lock and found nothing to do
        assert sorted(results, key=len) == [[], [], versions]
        rows = await connections[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == versions
        tables = {r["tablename"] for r in await connections[0].fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        assert tables >= TABLES
        assert await migrate(connections[0], PARAMS) == []
    finally:
        for conn in connections:
            await conn.close()


async def test_a_database_made_for_other_embeddings_is_refused(fresh_database):
    conn = await asyncpg.connect(fresh_database)
    try:
        await migrate(conn, PARAMS)
        with pytest.raises(MigrationError, match="384-dimensional.*1024"):
            await migrate(conn, {"embedding_dimensions": 1024})
    finally:
        await conn.close()


async def test_an_applied_migration_must_not_change(fresh_database, tmp_path):
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE eduserve_meta (key text PRIMARY KEY, value text NOT NULL);")
    conn = await asyncpg.connect(fresh_database)
    try:
        assert await migrate(conn, PARAMS, tmp_path) == ["0001_a"]
        (tmp_path / "0001_a.sql").write_text("CREATE TABLE something_else (id int);")
        with pytest.raises(MigrationError, match="edited"):
            await migrate(conn, PARAMS, tmp_path)
    finally:
        await conn.close()


async def test_vectors_round_trip_and_knn_uses_the_hnsw_index(fresh_database):
    conn = await asyncpg.connect(fresh_database)
    try:
        await migrate(conn, PARAMS)
        await register_vector(conn)
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((3000, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        collection = await conn.fetchval("INSERT INTO collections (name, kind) VALUES ('c', 'course') RETURNING id")
        doc = await conn.fetchval(
            "INSERT INTO documents (collection_id, title, content_hash) VALUES ($1, 'd', 'h') RETURNING id", collection
        )
        await conn.copy_records_to_table(
            "chunks", columns=["document_id", "collection_id", "position", "content", "token_count", "embedding"],
            records=[(doc, collection, i, f"chunk {i}", 3, v) for i, v in enumerate(vectors)],
        )
        stored = await conn.fetchval("SELECT embedding FROM chunks WHERE position = 7")
        np.testing.assert_allclose(stored.to_numpy(), vectors[7], rtol=1e-6)

        await conn.execute("ANALYZE chunks")
        query = "SELECT position FROM chunks ORDER BY embedding <=> $1 LIMIT 5"
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {query}", vectors[42]))
        assert "Index Scan using chunks_embedding_hnsw" in plan, plan
        nearest = await conn.fetch(query, vectors[42])
        assert nearest[0]["position"] == 42
    finally:
        await conn.close()
