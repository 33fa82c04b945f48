"""`build_app`: the Serve application builder named in serve_config.yaml (`serve_app.app:build_app`).

It reads and validates the profile, binds one deployment per model role and the ingress over their handles.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from ray.serve import Application

from deployments.embedder import Embedder
from deployments.llm import LLM
from deployments.reranker import Reranker
from deployments.safety import Safety
from deployments.translator import Translator
from deployments.tts import TTS
from serve_app.ingress import Ingress
from serve_app.security.tokens import load_or_create_secret
from serve_app.settings import Settings, load_settings

DEPLOYMENT_CLASSES = {
    "embedder": Embedder, "reranker": Reranker, "llm": LLM, "tts": TTS, "safety": Safety, "translator": Translator,
}


class AppArgs(BaseModel):
    """The `args:` of the application in serve_config.yaml."""

    model_config = ConfigDict(extra="forbid")

    profile: str | None = Field(None, description="profile name in configs/ or a YAML path; EDUSERVE_PROFILE else cpu")
    overrides: dict[str, Any] = Field(default_factory=dict, description="settings merged over the profile")


def with_local_secrets(settings: Settings) -> Settings:
    """Fill in the HS256 key when none is configured: created once under data_dir, so every replica (and every
    restart) signs and verifies with the same key. Multi-node deployments should set EDUSERVE_AUTH__JWT_SECRET."""
    if settings.auth.jwt_algorithm != "HS256" or settings.auth.jwt_secret is not None:
        return settings
    secret = load_or_create_secret(settings.data_dir / "secrets" / "jwt_secret")
    return settings.model_copy(update={"auth": settings.auth.model_copy(update={"jwt_secret": SecretStr(secret)})})


def bind_app(settings: Settings) -> Application:
    settings = with_local_secrets(settings)
    handles: dict[str, dict[str, Application]] = {}
    for role, config in settings.models.roles().items():
        handles[role] = {}
        for which, spec in (("primary", config.primary), ("fallback", config.fallback)):
            if spec is not None:
                deployment = DEPLOYMENT_CLASSES[role].options(**spec.serve_options())
                handles[role][which] = deployment.bind(spec, settings.offline, settings.replica_models_dir)
    ingress = settings.ingress
    placement = {"max_replicas_per_node": ingress.max_replicas_per_node} if ingress.max_replicas_per_node else {}
    return Ingress.options(
        name=ingress.name,
        num_replicas=ingress.num_replicas,
        ray_actor_options={"num_cpus": ingress.num_cpus},
        max_ongoing_requests=ingress.max_ongoing_requests,
        max_queued_requests=ingress.max_queued_requests,
        **placement,
    ).bind(settings, handles)


def build_app(args: AppArgs | dict[str, Any]) -> Application:
    # Serve validates `args` against the AppArgs annotation; a plain dict (Python callers) is validated here.
    args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args)
    return bind_app(load_settings(args.profile, args.overrides))
