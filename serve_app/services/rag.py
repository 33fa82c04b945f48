"""Retrieval: dense search (pgvector HNSW) fused with PostgreSQL full-text search by reciprocal rank fusion,
re-ordered by the Reranker deployment, within the collections the caller may read; results cached for five
minutes under a key that includes every searched collection's version, so a change is never served stale.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from serve_app import metrics
from serve_app.errors import EduserveError, ErrorCode
from serve_app.security.principal import Principal
from serve_app.services.collections import CollectionService, not_found, public_name
from serve_app.services.embeddings import EmbeddingService
from serve_app.services.rerank import RerankService
from serve_app.settings import RagSettings
from serve_app.storage.cache import TieredCache
from serve_app.storage.db import Database

Mode = Literal["dense", "hybrid"]


@dataclass(frozen=True)
class SearchParams:
    query: str
    collections: tuple[str, ...] | None
    top_k: int
    mode: Mode
    rerank: bool
    ef_search: int


def reciprocal_rank_fusion(rankings: list[list[int]], k: int) -> dict[int, float]:
    """score(id) = sum over rankings of 1 / (k + rank), ranks from 1."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return scores


class RagService:
    def __init__(self, db: Database, cache: TieredCache, collections: CollectionService, embeddings: EmbeddingService,
                 rerank: RerankService, settings: RagSettings):
        self.db = db
        self.cache = cache
        self.collections = collections
        self.embeddings = embeddings
        self.rerank = rerank
        self.settings = settings

    async def search(self, principal: Principal, params: SearchParams) -> dict[str, Any]:
        async with self.db.connection() as conn:
            readable = await self.collections.readable(conn, principal)
        scope = self._scope(readable, params.collections)
        key = hashlib.sha256(json.dumps({
            "scope": [(c["id"], c["version"]) for c in scope],
            "query": params.query, "top_k": params.top_k, "mode": params.mode, "rerank": params.rerank,
            "ef_search": params.ef_search,
        }, sort_keys=True).encode()).hexdigest()
        cached = await self.cache.get(key)
        metrics.record_rag_cache(cached is not None)
        if cached is not None:
            return {**cached, "cached": True}
        results = await self._search(scope, params) if scope else []
        answer = {"query": params.query, "results": results, "collections": [public_name(c["name"]) for c in scope]}
        await self.cache.set(key, answer, self.settings.cache_ttl_s)
        return {**answer, "cached": False}

    def _scope(self, readable: list[dict[str, Any]], requested: tuple[str, ...] | None) -> list[dict[str, Any]]:
        if requested is None:
            return readable
        by_name = {public_name(c["name"]): c for c in readable}
        missing = [name for name in requested if name not in by_name]
        if missing:
            raise not_found(f"collection {missing[0]!r}")
        return [by_name[name] for name in dict.fromkeys(requested)]

    async def _search(self, scope: list[dict[str, Any]], params: SearchParams) -> list[dict[str, Any]]:
        """Dense and keyword candidates in one transaction (its `hnsw.ef_search`), fused, then reranked. Long on
        purpose: the two queries share the transaction and read best side by side."""
        vectors, _ = await self.embeddings.embed([params.query], truncate=-1)  # a long query: what the model reads
        query_vector = np.asarray(vectors[0], dtype=np.float32)
        ids = [uuid.UUID(c["id"]) for c in scope]
        limit = self.settings.candidates
        async with self.db.transaction() as conn:
            await conn.execute(f"SET LOCAL hnsw.ef_search = {int(params.ef_search)}")
            # Filtered HNSW: keep scanning until enough rows pass the collection filter.
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            dense = await conn.fetch(
                "SELECT id, 1 - (embedding <=> $1) AS similarity FROM chunks WHERE collection_id = ANY($2)"
                " ORDER BY embedding <=> $1 LIMIT $3",
                query_vector, ids, limit,
            )
            lexical = []
            if params.mode == "hybrid":
                lexical = await conn.fetch(
                    "SELECT id, ts_rank_cd(tsv, query) AS rank FROM chunks, websearch_to_tsquery('english', $1) query"
                    " WHERE collection_id = ANY($2) AND tsv @@ query ORDER BY rank DESC LIMIT $3",
                    params.query, ids, limit,
                )
        dense_scores = {r["id"]: float(r["similarity"]) for r in dense}
        lexical_scores = {r["id"]: float(r["rank"]) for r in lexical}
        if params.mode == "hybrid":
            fused = reciprocal_rank_fusion([[r["id"] for r in dense], [r["id"] for r in lexical]], self.settings.rrf_k)
        else:
            fused = {r["id"]: float(r["similarity"]) for r in dense}
        ranked = sorted(fused, key=fused.get, reverse=True)
        candidates = ranked[: max(self.settings.rerank_candidates, params.top_k)] if params.rerank else ranked[: params.top_k]
        rows = await self._chunks(candidates)
        rerank_scores: dict[int, float] = {}
        if params.rerank and rows:
            texts = [self._text(rows[c]) for c in candidates]
            scores, _ = await self.rerank.scores(params.query, texts)
            rerank_scores = dict(zip(candidates, scores, strict=True))
            candidates = sorted(candidates, key=rerank_scores.get, reverse=True)
        results = []
        for chunk_id in candidates[: params.top_k]:
            row = rows[chunk_id]
            results.append({
                "chunk_id": chunk_id,
                "document_id": row["document_id"],
                "document_title": row["title"],
                "collection": public_name(row["collection"]),
                "position": row["position"],
                "heading": row["heading"],
                "content": row["content"],
                "score": rerank_scores.get(chunk_id, fused[chunk_id]),
                "scores": {
                    "dense": dense_scores.get(chunk_id),
                    "lexical": lexical_scores.get(chunk_id),
                    "fused": fused[chunk_id],
                    "rerank": rerank_scores.get(chunk_id),
                },
            })
        return results

    @staticmethod
    def _text(row: dict[str, Any]) -> str:
        return f"{row['heading']}\n{row['content']}" if row["heading"] else row["content"]

    async def _chunks(self, chunk_ids: list[int]) -> dict[int, dict[str, Any]]:
        if not chunk_ids:
            return {}
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                "SELECT k.id, k.position, k.heading, k.content, d.id::text AS document_id, d.title, c.name AS collection"
                " FROM chunks k JOIN documents d ON d.id = k.document_id JOIN collections c ON c.id = k.collection_id"
                " WHERE k.id = ANY($1)", chunk_ids,
            )
        return {r["id"]: dict(r) for r in rows}


def search_params(settings: RagSettings, query: str, collections: list[str] | None, top_k: int | None,
                  mode: Mode, rerank: bool, ef_search: int | None) -> SearchParams:
    if not query.strip():
        raise EduserveError(ErrorCode.VALIDATION_ERROR, "query: must not be blank")
    return SearchParams(
        query=query.strip(),
        collections=tuple(collections) if collections else None,
        top_k=top_k or settings.top_k,
        mode=mode,
        rerank=rerank,
        ef_search=ef_search or settings.ef_search,
    )
