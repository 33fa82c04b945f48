"""`build_app`: the Serve application builder named in serve_config.yaml (`serve_app.app:build_app`).

It reads and validates the profile, binds one deployment per model role and the ingress over their handles.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from deployments.embedder import Embedder
from deployments.reranker import Reranker
from serve_app.ingress import Ingress
from serve_app.settings import Settings, load_settings

DEPLOYMENT_CLASSES = {"embedder": Embedder, "reranker": Reranker}


class AppArgs(BaseModel):
    """The `args:` of the application in serve_config.yaml."""

    model_config = ConfigDict(extra="forbid")

    profile: str | None = Field(None, description="profile name in configs/ or a YAML path; EDUSERVE_PROFILE else cpu")
    overrides: dict[str, Any] = Field(default_factory=dict, description="settings merged over the profile")


def bind_app(settings: Settings) -> Application:
    handles: dict[str, dict[str, Application]] = {}
    for role, config in settings.models.roles().items():
        handles[role] = {}
        for which, spec in (("primary", config.primary), ("fallback", config.fallback)):
            if spec is not None:
                deployment = DEPLOYMENT_CLASSES[role].options(**spec.serve_options())
                handles[role][which] = deployment.bind(spec, settings.offline)
    ingress = settings.ingress
    return Ingress.options(
        name=ingress.name,
        num_replicas=ingress.num_replicas,
        ray_actor_options={"num_cpus": ingress.num_cpus},
        max_ongoing_requests=ingress.max_ongoing_requests,
        max_queued_requests=ingress.max_queued_requests,
    ).bind(settings, handles)


def build_app(args: AppArgs | dict[str, Any]) -> Application:
    # Serve validates `args` against the AppArgs annotation; a plain dict (Python callers) is validated here.
    args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args)
    return bind_app(load_settings(args.profile, args.overrides))
