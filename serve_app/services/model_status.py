"""What the ingress knows of the models and stores it depends on: readiness (`/readyz`) and the model list with
each role's status (`/v1/models`), asked of the deployments through their routers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Protocol

from serve_app.catalog import ModelCatalog
from serve_app.errors import EduserveError
from serve_app.routing import ModelRouter
from serve_app.services.embeddings import EmbeddingService


class Checked(Protocol):
    async def check(self) -> dict[str, Any]: ...


class ModelStatus:
    def __init__(self, routers: dict[str, ModelRouter], catalog: ModelCatalog, embeddings: EmbeddingService,
                 stores: Sequence[Checked], readiness_timeout_s: float):
        self.routers = routers
        self.catalog = catalog
        self.embeddings = embeddings
        self.stores = stores  # the database and Redis, in that order
        self.readiness_timeout_s = readiness_timeout_s
        self.started = int(time.time())

    async def _deployment_info(self, router: ModelRouter, which: str) -> dict[str, Any]:
        try:
            info = await router.call_target(which, "info", timeout_s=self.readiness_timeout_s)
            return {"ok": True, **info}
        except EduserveError as exc:
            return {"ok": False, "error": exc.message}

    async def _role_status(self, router: ModelRouter) -> dict[str, Any]:
        which = ["primary"] + (["fallback"] if router.fallback else [])
        infos = await asyncio.gather(*(self._deployment_info(router, w) for w in which))
        deployments = dict(zip(which, infos, strict=True))
        status = {
            # A role is up when any of its deployments answers: the router sends traffic where it can.
            "ok": any(info["ok"] for info in deployments.values()),
            "routing": await router.status(),
            "deployments": deployments,
        }
        if router is self.embeddings.router and self.embeddings.coalescer is not None:
            status["coalescing"] = self.embeddings.coalescer.stats()  # this ingress replica's
        return status

    async def _all_status(self) -> dict[str, dict[str, Any]]:
        roles = list(self.routers)
        reports = await asyncio.gather(*(self._role_status(self.routers[role]) for role in roles))
        return dict(zip(roles, reports, strict=True))

    async def readiness(self) -> dict[str, dict[str, Any]]:
        """Models by role, plus storage. Redis down is degraded, not unready: the service still answers."""
        checks: dict[str, dict[str, Any]] = {}
        checks["database"], checks["redis"] = await asyncio.gather(*(store.check() for store in self.stores))
        for role, status in (await self._all_status()).items():
            check: dict[str, Any] = {"ok": status["ok"]}
            for which, info in status["deployments"].items():
                check[which] = info["ok"] if info["ok"] else info["error"]
            checks[role] = check
        return checks

    async def _loaded_on(self, role: str) -> dict[str, list[str]]:
        """Multiplexed model id → primary replicas that have it loaded. Each info call reaches one replica, so
        a few are sampled; with more replicas than samples the answer may be partial."""
        router = self.routers[role]
        replicas = router.primary.spec.num_replicas if router.primary.spec.autoscaling is None else 4
        reports = await asyncio.gather(*(self._deployment_info(router, "primary") for _ in range(2 * replicas)))
        loaded: dict[str, set[str]] = {}
        for report in reports:
            for model_id in (report.get("multiplexed") or {}).get("loaded", []) if report["ok"] else []:
                loaded.setdefault(model_id, set()).add(report["replica"])
        return {model_id: sorted(replicas) for model_id, replicas in loaded.items()}

    async def list_models(self, with_status: bool = True) -> dict[str, Any]:
        """Every served model; with `with_status`, each with its role's replica reports (operators' view: nodes,
        pids, paths, routing counters), else without asking any replica."""
        statuses: dict[str, Any] = {}
        loaded: dict[str, dict[str, list[str]]] = {}
        if with_status:
            statuses = await self._all_status()
            roles = sorted({m.role for m in self.catalog.multiplexed.values()})
            loaded = dict(zip(roles, await asyncio.gather(*(self._loaded_on(r) for r in roles)), strict=True))
        data = []
        for model in self.catalog.models():
            status = statuses.get(model.role)
            if model.multiplexed_id is not None and with_status:
                status = {"multiplexed": True, "deployment": self.routers[model.role].primary.name,
                          "loaded_on": loaded.get(model.role, {}).get(model.multiplexed_id, [])}
            data.append({"id": model.name, "object": "model", "created": self.started, "owned_by": "eduserve",
                         "role": model.role, "aliases": list(model.aliases), "status": status})
        return {"object": "list", "data": data}
