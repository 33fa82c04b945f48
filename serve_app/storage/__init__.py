"""Storage under the ingress: PostgreSQL + pgvector (asyncpg), Redis, an in-process L1 cache, embedded servers."""
