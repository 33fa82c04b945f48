"""`POST /v1/rerank` (the Cohere v1 / Jina / vLLM shape) and `POST /v2/rerank` (Cohere's v2 API)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from serve_app.protocol.common import OpenAICompatibleRequest


class RerankDocument(BaseModel):
    text: str


class RerankRequest(OpenAICompatibleRequest):
    model: str | None = Field(None, description="served model name; the profile's reranker when omitted")
    query: str = Field(min_length=1)
    documents: list[str | RerankDocument] = Field(min_length=1, description="texts, or objects with `text`")
    top_n: int | None = Field(None, ge=1, description="return only the best n results")
    return_documents: bool = Field(False, description="include each document's text in its result")

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    def document_texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankResult(BaseModel):
    index: int = Field(description="position of the document in the request")
    relevance_score: float = Field(description="in [0, 1], higher is more relevant")
    document: RerankDocument | None = None


class RerankUsage(BaseModel):
    """The rerank APIs' usage (Jina's, vLLM's): the tokens scored."""

    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult] = Field(description="sorted by relevance_score, best first")
    usage: RerankUsage


class CohereRerankRequest(RerankRequest):
    """Cohere's v2 rerank request (`co.rerank` of the v2 client). `return_documents` is accepted as vLLM and
    Cohere v1 have it."""

    max_tokens_per_doc: int | None = Field(None, ge=1, description="each document is cut to this many tokens")


class BilledUnits(BaseModel):
    search_units: int = Field(description="one per query with up to 100 documents, as Cohere counts them")


class ApiVersion(BaseModel):
    version: str = "2"


class RerankMeta(BaseModel):
    api_version: ApiVersion = Field(default_factory=ApiVersion)
    billed_units: BilledUnits
    tokens: dict[str, int] = Field(description="input_tokens")


class CohereRerankResponse(BaseModel):
    id: str
    results: list[RerankResult] = Field(description="sorted by relevance_score, best first")
    meta: RerankMeta
