"""Documents: ingestion (extract → chunk → embed → store, one transaction per document), ingest jobs with
progress, listing and deletion; who may read and write a collection is `CollectionService`'s."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from serve_app.errors import EduserveError, ErrorCode
from serve_app.security.principal import Principal
from serve_app.services.chunking import Chunk, ExtractionError, chunk_text, normalise
from serve_app.services.collections import Collection, CollectionService, not_found, public_name
from serve_app.services.embeddings import EmbeddingService
from serve_app.settings import RagSettings
from serve_app.storage.db import Database

logger = logging.getLogger("ray.serve.eduserve.documents")

MARKDOWN_TYPES = ("text/markdown", "text/x-markdown")
SUPPORTED_TYPES = ("text/plain", *MARKDOWN_TYPES, "application/pdf")
DOCUMENT_COLUMNS = (
    "d.id::text AS id, d.title, d.source, d.mime_type, d.content_hash, d.created_at, c.name AS collection,"
    " (SELECT count(*) FROM chunks k WHERE k.document_id = d.id) AS chunks"
)


@dataclass
class DocumentInput:
    title: str
    text: str
    mime_type: str = "text/plain"
    source: str | None = None


class DocumentService:
    def __init__(self, db: Database, collections: CollectionService, embeddings: EmbeddingService,
                 settings: RagSettings):
        self.db = db
        self.collections = collections
        self.embeddings = embeddings
        self.settings = settings
        self._background: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ ingestion

    def _check(self, document: DocumentInput) -> None:
        if document.mime_type not in SUPPORTED_TYPES:
            raise EduserveError(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                                f"{document.mime_type}: supported types are {', '.join(SUPPORTED_TYPES)}")
        if not normalise(document.text):
            raise EduserveError(ErrorCode.VALIDATION_ERROR, f"document {document.title!r} has no text")

    async def ingest(self, principal: Principal, collection_name: str, documents: list[DocumentInput],
                     job_id: str | None = None) -> list[dict[str, Any]]:
        """Store each document (skipping one whose content is already in the collection). Each document is one
        transaction: it is stored with all its chunks or not at all."""
        if len(documents) > self.settings.max_documents_per_request:
            raise EduserveError(ErrorCode.PAYLOAD_TOO_LARGE,
                                f"at most {self.settings.max_documents_per_request} documents per request")
        for document in documents:
            self._check(document)
        async with self.db.connection() as conn:
            collection = await self.collections.resolve(conn, principal, collection_name, write=True)
        results = []
        for document in documents:
            try:
                result = await self._ingest_one(principal, collection, document)
            except EduserveError as exc:
                if job_id is None:
                    raise
                result = {"title": document.title, "error": exc.message}
            results.append(result)
            if job_id is not None:
                await self._progress(job_id, result)
        return results

    async def _ingest_one(self, principal: Principal, collection: Collection, document: DocumentInput) -> dict:
        text = normalise(document.text)
        content_hash = hashlib.sha256(text.encode()).hexdigest()
        async with self.db.connection() as conn:
            existing = await conn.fetchrow(
                "SELECT id::text AS id, (SELECT count(*) FROM chunks WHERE document_id = d.id) AS chunks"
                " FROM documents d WHERE collection_id = $1 AND content_hash = $2",
                uuid.UUID(collection.id), content_hash,
            )
        if existing is not None:
            return {"id": existing["id"], "title": document.title, "chunks": existing["chunks"], "duplicate": True}

        tokenizer = (await self.embeddings.window()).tokenizer  # the model's own tokens, none cut off
        # Off the event loop: tokenizing a long document takes ~0.5 s per MB.
        chunks = await asyncio.to_thread(chunk_text, text, tokenizer, self.settings.chunk_tokens,
                                         self.settings.chunk_overlap, document.mime_type in MARKDOWN_TYPES)
        vectors = await self._embed(chunks)
        try:
            async with self.db.transaction() as conn:
                document_id = await conn.fetchval(
                    "INSERT INTO documents (collection_id, title, source, mime_type, content_hash, created_by)"
                    " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    uuid.UUID(collection.id), document.title, document.source, document.mime_type, content_hash,
                    uuid.UUID(principal.user_id),
                )
                await conn.copy_records_to_table(
                    "chunks",
                    columns=["document_id", "collection_id", "position", "heading", "content", "token_count",
                             "embedding"],
                    records=[
                        (document_id, uuid.UUID(collection.id), c.position, c.heading, c.text, c.token_count, v)
                        for c, v in zip(chunks, vectors, strict=True)
                    ],
                )
                await conn.execute("UPDATE collections SET version = version + 1 WHERE id = $1",
                                   uuid.UUID(collection.id))
        except asyncpg.UniqueViolationError:  # the same content, ingested concurrently: it is there now
            return {"title": document.title, "chunks": len(chunks), "duplicate": True}
        return {"id": str(document_id), "title": document.title, "chunks": len(chunks), "duplicate": False}

    async def _embed(self, chunks: list[Chunk]) -> list[Any]:
        vectors: list[Any] = []
        texts = [c.embedding_text() for c in chunks]
        for start in range(0, len(texts), self.settings.embed_batch):
            batch, _ = await self.embeddings.embed(texts[start:start + self.settings.embed_batch], truncate=-1)
            vectors.extend(batch)
        return vectors

    # ------------------------------------------------------------------ jobs

    async def start_job(self, principal: Principal, collection_name: str, documents: list[DocumentInput]) -> dict:
        """Ingest in the background; progress at GET /v2/documents/jobs/{id}."""
        for document in documents:
            self._check(document)
        async with self.db.connection() as conn:
            collection = await self.collections.resolve(conn, principal, collection_name, write=True)
            job = await conn.fetchrow(
                "INSERT INTO ingest_jobs (user_id, collection_id, total_documents) VALUES ($1, $2, $3)"
                " RETURNING id::text AS id",
                uuid.UUID(principal.user_id), uuid.UUID(collection.id), len(documents),
            )
        task = asyncio.get_running_loop().create_task(self._run_job(job["id"], principal, collection_name, documents))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return await self.job(principal, job["id"])

    async def _run_job(self, job_id: str, principal: Principal, collection: str, documents: list[DocumentInput]):
        await self._set_job(job_id, "running")
        try:
            results = await self.ingest(principal, collection, documents, job_id=job_id)
        except Exception as exc:  # recorded on the job; the documents already stored stay stored
            logger.exception("ingest job %s failed", job_id)
            await self._set_job(job_id, "failed", str(exc))
            return
        await self._set_job(job_id, "failed" if any("error" in r for r in results) else "succeeded")

    async def _set_job(self, job_id: str, status: str, error: str | None = None) -> None:
        async with self.db.connection() as conn:
            await conn.execute("UPDATE ingest_jobs SET status = $2, error = $3, updated_at = now() WHERE id = $1",
                               uuid.UUID(job_id), status, error)

    async def _progress(self, job_id: str, result: dict[str, Any]) -> None:
        async with self.db.connection() as conn:
            await conn.execute(
                "UPDATE ingest_jobs SET done_documents = done_documents + 1,"
                " failed_documents = failed_documents + $2, chunks = chunks + $3,"
                " results = results || $4::jsonb, updated_at = now() WHERE id = $1",
                uuid.UUID(job_id), int("error" in result), int(result.get("chunks", 0) if not result.get("duplicate") else 0),
                json.dumps([result]),
            )

    async def job(self, principal: Principal, job_id: str) -> dict[str, Any]:
        try:
            key = uuid.UUID(job_id)
        except ValueError:
            raise not_found("job") from None
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT id::text AS id, status, total_documents, done_documents, failed_documents, chunks, results,"
                " error, created_at, updated_at FROM ingest_jobs WHERE id = $1 AND user_id = $2",
                key, uuid.UUID(principal.user_id),
            )
        if row is None:
            raise not_found("job")
        job = dict(row)
        job["results"] = json.loads(job["results"]) if isinstance(job["results"], str) else job["results"]
        return job

    # ------------------------------------------------------------------ documents

    async def list_documents(self, principal: Principal, collection_name: str, limit: int, offset: int) -> list:
        async with self.db.connection() as conn:
            collection = await self.collections.resolve(conn, principal, collection_name, write=False)
            rows = await conn.fetch(
                f"SELECT {DOCUMENT_COLUMNS} FROM documents d JOIN collections c ON c.id = d.collection_id"
                " WHERE d.collection_id = $1 ORDER BY d.created_at DESC LIMIT $2 OFFSET $3",
                uuid.UUID(collection.id), limit, offset,
            )
        return [self._public(dict(r)) for r in rows]

    async def _document(self, conn: asyncpg.Connection, principal: Principal, document_id: str,
                        write: bool) -> dict[str, Any]:
        try:
            key = uuid.UUID(document_id)
        except ValueError:
            raise not_found("document") from None
        row = await conn.fetchrow(
            f"SELECT {DOCUMENT_COLUMNS}, c.id::text AS collection_id, c.kind, c.owner_id::text AS owner_id"
            " FROM documents d JOIN collections c ON c.id = d.collection_id WHERE d.id = $1", key,
        )
        if row is None:
            raise not_found("document")
        collection = Collection(row["collection_id"], row["collection"], row["kind"], row["owner_id"])
        if not await self.collections.can_read(conn, principal, collection):
            raise not_found("document")
        if write and not self.collections.can_write(principal, collection):
            raise EduserveError(ErrorCode.FORBIDDEN, "only teachers and admins remove course documents")
        return dict(row)

    async def get_document(self, principal: Principal, document_id: str, include_chunks: bool) -> dict[str, Any]:
        async with self.db.connection() as conn:
            document = await self._document(conn, principal, document_id, write=False)
            if include_chunks:
                rows = await conn.fetch(
                    "SELECT position, heading, content, token_count FROM chunks WHERE document_id = $1"
                    " ORDER BY position", uuid.UUID(document_id),
                )
                document["chunk_list"] = [dict(r) for r in rows]
        return self._public(document)

    async def delete_document(self, principal: Principal, document_id: str) -> None:
        async with self.db.transaction() as conn:
            document = await self._document(conn, principal, document_id, write=True)
            await conn.execute("DELETE FROM documents WHERE id = $1", uuid.UUID(document_id))  # chunks cascade
            await conn.execute("UPDATE collections SET version = version + 1 WHERE id = $1::uuid",
                               document["collection_id"])

    @staticmethod
    def _public(document: dict[str, Any]) -> dict[str, Any]:
        if "collection" in document:
            document["collection"] = public_name(document["collection"])
        for internal in ("collection_id", "kind", "owner_id"):
            document.pop(internal, None)
        return document


def extraction_error(exc: ExtractionError) -> EduserveError:
    return EduserveError(ErrorCode.VALIDATION_ERROR, str(exc))
