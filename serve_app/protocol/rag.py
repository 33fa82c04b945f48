"""`/v2/collections`, `/v2/documents` and `/v2/rag/search` schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from serve_app.protocol.common import StrictRequest

MimeType = Literal["text/plain", "text/markdown"]


class CollectionCreate(StrictRequest):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,62}$", description="a course collection's name")


class MemberAdd(StrictRequest):
    email: str


class CollectionOut(BaseModel):
    id: str
    name: str = Field(description="`private` for the caller's own collection")
    kind: Literal["course", "private"]
    version: int = Field(description="bumped on every change (cache invalidation)")


class DocumentIn(StrictRequest):
    title: str = Field(min_length=1, max_length=300)
    text: str = Field(min_length=1)
    mime_type: MimeType = "text/plain"
    source: str | None = Field(None, max_length=1000)


class DocumentCreate(StrictRequest):
    """One document (`title` + `text`) or a batch (`documents`)."""

    collection: str = Field(description="a course collection, or `private`")
    title: str | None = Field(None, min_length=1, max_length=300)
    text: str | None = Field(None, min_length=1)
    mime_type: MimeType = "text/plain"
    source: str | None = Field(None, max_length=1000)
    documents: list[DocumentIn] | None = Field(None, min_length=1)

    def items(self) -> list[DocumentIn]:
        if self.documents is not None:
            if self.title or self.text:
                raise ValueError("give either title/text or documents, not both")
            return self.documents
        if not (self.title and self.text):
            raise ValueError("title and text are required (or a documents list)")
        return [DocumentIn(title=self.title, text=self.text, mime_type=self.mime_type, source=self.source)]


class IngestResult(BaseModel):
    id: str | None = None
    title: str
    chunks: int = 0
    duplicate: bool = False
    error: str | None = None


class IngestResponse(BaseModel):
    collection: str
    documents: list[IngestResult]


class JobOut(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed"]
    total_documents: int
    done_documents: int
    failed_documents: int
    chunks: int
    results: list[IngestResult]
    error: str | None = None
    created_at: datetime
    updated_at: datetime


class ChunkOut(BaseModel):
    position: int
    heading: str | None
    content: str
    token_count: int


class DocumentOut(BaseModel):
    id: str
    title: str
    source: str | None
    mime_type: str
    content_hash: str
    collection: str
    chunks: int
    created_at: datetime
    chunk_list: list[ChunkOut] | None = None


class SearchRequest(StrictRequest):
    query: str = Field(min_length=1, max_length=2000)
    collections: list[str] | None = Field(None, description="default: every collection the caller may read")
    top_k: int | None = Field(None, ge=1, le=50)
    mode: Literal["dense", "hybrid"] = Field("hybrid", description="dense only, or dense + full text (RRF)")
    rerank: bool = Field(True, description="re-order the fused candidates with the Reranker deployment")
    ef_search: int | None = Field(None, ge=1, le=1000, description="HNSW search breadth")


class SearchHit(BaseModel):
    chunk_id: int
    document_id: str
    document_title: str
    collection: str
    position: int
    heading: str | None
    content: str
    score: float = Field(description="the rerank score when reranked, else the fused score")
    scores: dict[str, Any]


class SearchResponse(BaseModel):
    query: str
    results: list[SearchHit]
    collections: list[str]
    cached: bool
