from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from serve_app.api.deps import State
from serve_app.errors import ErrorCode, error_body
from serve_app.protocol.models import Liveness, Readiness, VersionInfo
from serve_app.version import version_info

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Liveness)
async def healthz():
    """Liveness: the ingress answers. Says nothing about the models."""
    return Liveness()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(state: State):
    """Readiness: every model deployment answered within the timeout."""
    checks = await state.status.readiness()
    if all(check["ok"] for check in checks.values()):
        return Readiness(status="ready", checks=checks)
    failing = sorted(name for name, check in checks.items() if not check["ok"])
    body = {
        "status": "unavailable",
        "checks": checks,
        **error_body(ErrorCode.MODEL_UNAVAILABLE, f"not ready: {', '.join(failing)}"),
    }
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


@router.get("/version", response_model=VersionInfo)
async def version(state: State):
    """What is serving: eduserve's version, the profile, and the versions of the serving stack."""
    return VersionInfo(profile=Path(state.settings.profile).stem, **version_info())  # a name, never a path
