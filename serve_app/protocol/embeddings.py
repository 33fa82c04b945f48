"""`POST /v1/embeddings`, in the OpenAI shape."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from serve_app.protocol.common import OpenAICompatibleRequest, Usage


class EmbeddingRequest(OpenAICompatibleRequest):
    input: str | list[str] = Field(description="one text or a list of texts")
    model: str | None = Field(None, description="served model name; the profile's embedder when omitted")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: little-endian float32 bytes, as the openai SDK expects"
    )
    dimensions: int | None = Field(None, ge=1, description="accepted only when equal to the model's size")
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _texts_only(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("must not be an empty list")
            if all(isinstance(v, int) for v in value) or all(isinstance(v, list) for v in value):
                raise ValueError("token-id input is not supported; send text")
            for index, item in enumerate(value):
                if not isinstance(item, str):
                    raise ValueError(f"item {index} must be a string, not {type(item).__name__}")
                if not item.strip():
                    raise ValueError(f"item {index} must not be empty")
        elif isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage
