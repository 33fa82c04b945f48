"""`POST /v1/embeddings`, in the OpenAI shape."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from serve_app.protocol.common import OpenAICompatibleRequest


class EmbeddingRequest(OpenAICompatibleRequest):
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="a text, texts, or token ids of the served model's vocabulary (one list, or a list of lists)")
    model: str | None = Field(None, description="served model name; the profile's embedder when omitted")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: little-endian float32 bytes, as the openai SDK expects"
    )
    dimensions: int | None = Field(None, ge=1, description="accepted only when equal to the model's size")
    user: str | None = None
    # vLLM's: an input longer than the model reads is an error unless the caller asks for it to be cut
    truncate_prompt_tokens: int | None = Field(
        None, ge=-1, description="cut each input to this many tokens, special ones included (-1: the model's "
        "window); whole words are kept, so a cut input may have a few fewer")
    truncation_side: Literal["left", "right"] = Field(
        "right", description="with truncate_prompt_tokens: 'right' keeps the first tokens, 'left' the last")
    # vLLM's, for base64: the number type and byte order of the encoded vector
    embed_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    endianness: Literal["native", "little", "big"] = "native"
    use_activation: bool | None = Field(None, description="vLLM's; only true: vectors are always L2-normalised")

    @field_validator("use_activation")
    @classmethod
    def _normalised_only(cls, value: bool | None) -> bool | None:
        if value is False:
            raise ValueError("vectors from this service are always L2-normalised; leave it out")
        return value

    @field_validator("input", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("must not be an empty list")
            if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                return value  # one input as token ids (range checked by the model's vocabulary)
            for index, item in enumerate(value):
                if isinstance(item, list):
                    if not item or not all(isinstance(t, int) and not isinstance(t, bool) for t in item):
                        raise ValueError(f"item {index} must be a non-empty list of token ids")
                elif not isinstance(item, str):
                    raise ValueError(f"item {index} must be a string or token ids, not {type(item).__name__}")
                elif not item.strip():
                    raise ValueError(f"item {index} must not be empty")
        elif isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value

    def inputs(self) -> list[str | list[int]]:
        """One item per embedding: a text or token ids."""
        if isinstance(self.input, str) or (self.input and isinstance(self.input[0], int)):
            return [self.input]  # type: ignore[list-item]
        return list(self.input)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    """OpenAI's embeddings usage: the tokens embedded (no completion)."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
