"""What the ingress replica holds: settings, the model catalog, one ModelClient per role, the services."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ray.serve.handle import DeploymentHandle

from serve_app.catalog import ModelCatalog
from serve_app.errors import EduserveError
from serve_app.routing import ModelClient
from serve_app.services.embeddings import EmbeddingService
from serve_app.services.rerank import RerankService
from serve_app.settings import Settings


class AppState:
    def __init__(self, settings: Settings, handles: dict[str, DeploymentHandle]):
        self.settings = settings
        self.started = int(time.time())
        self.catalog = ModelCatalog(settings.models.roles())
        timeout = settings.ingress.model_call_timeout_s
        self.clients = {role: ModelClient(role, handle, timeout) for role, handle in handles.items()}
        self.embeddings = EmbeddingService(self.clients["embedder"], self.catalog, settings.limits)
        self.rerank = RerankService(self.clients["reranker"], self.catalog, settings.limits)

    async def _info(self, role: str) -> dict[str, Any]:
        try:
            info = await self.clients[role].call("info", timeout_s=self.settings.ingress.readiness_timeout_s)
            return {"ok": True, **info}
        except EduserveError as exc:
            return {"ok": False, "error": exc.message}

    async def _all_info(self) -> dict[str, dict[str, Any]]:
        roles = list(self.clients)
        reports = await asyncio.gather(*(self._info(role) for role in roles))
        return dict(zip(roles, reports, strict=True))

    async def readiness(self) -> dict[str, dict[str, Any]]:
        return {
            role: {"ok": report["ok"], **({"error": report["error"]} if not report["ok"] else {})}
            for role, report in (await self._all_info()).items()
        }

    async def list_models(self) -> dict[str, Any]:
        reports = await self._all_info()
        data = [
            {
                "id": model.name,
                "object": "model",
                "created": self.started,
                "owned_by": "eduserve",
                "role": role,
                "aliases": list(model.aliases),
                "status": reports.get(role),
            }
            for role, model in self.catalog.by_role.items()
        ]
        return {"object": "list", "data": data}
