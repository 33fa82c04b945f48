"""Schema pieces shared by several features."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class OpenAICompatibleRequest(BaseModel):
    """OpenAI clients add fields over time; unknown ones are ignored rather than rejected."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class ErrorDetail(BaseModel):
    type: str = Field(examples=["invalid_request_error"])
    message: str
    code: str = Field(examples=["validation_error"])


class ErrorResponse(BaseModel):
    """The one error shape every endpoint answers with."""

    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


ERROR_RESPONSES = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        404: "Unknown model",
        413: "Too many inputs or an input too long",
        422: "Malformed request",
        503: "Model busy or unavailable",
        504: "Model timed out",
    }.items()
}
