"""`GET /v1/models`, `/healthz` and `/readyz`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "eduserve"
    role: str = Field(description="embedder, reranker, ...")
    aliases: list[str] = Field(default_factory=list)
    status: dict[str, Any] | None = Field(
        None, description="for an admin: the replicas' reports (device, active backend, batching, routing); else null")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class VersionInfo(BaseModel):
    version: str = Field(description="eduserve")
    profile: str
    python: str
    ray: str | None
    vllm: str | None
    fastapi: str | None
    onnxruntime: str | None
    openvino: str | None


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, dict[str, Any]]
