"""The models section of the settings: per role, the name clients use, the deployments that serve it (a primary,
usually on GPUs, and an optional CPU fallback) and how the ingress routes between them."""

from __future__ import annotations

from pydantic import Field, model_validator

from deployments.spec import DeploymentSpec, StrictModel


class RoutingPolicy(StrictModel):
    """How the ingress picks between a role's primary (GPU) and fallback (CPU) deployment."""

    primary_max_inflight: int | None = Field(
        None, ge=1, description="calls in flight to the primary per ingress replica before overflowing to fallback"
    )
    primary_timeout_s: float = Field(30.0, gt=0, description="a primary call slower than this counts as a failure")
    breaker_failure_threshold: int = Field(3, ge=1, description="consecutive primary failures that open the breaker")
    breaker_reset_s: float = Field(15.0, gt=0, description="open time before a half-open probe")
    degraded_primary_is_unavailable: bool = Field(
        True, description="skip a primary whose replica reports it found no usable GPU"
    )
    health_probe_period_s: float = Field(10.0, gt=0, description="how often to refresh the primary's device report")


class RoleConfig(StrictModel):
    """One model role (embedder, reranker, ...): the name clients use and the deployments that serve it."""

    served_model_name: str = Field(min_length=1, pattern=r"^[\w.\-/:]+$")
    aliases: list[str] = Field(default_factory=list, description="other names accepted in `model`")
    primary: DeploymentSpec
    fallback: DeploymentSpec | None = Field(
        None, description="a CPU deployment that takes the overflow and the traffic while the primary fails"
    )
    routing: RoutingPolicy = Field(default_factory=RoutingPolicy)

    @model_validator(mode="after")
    def _vllm_serves_our_names(self) -> RoleConfig:
        """vLLM's OpenAI layer checks `model` against its served names: give it ours unless the profile did."""
        for which in ("primary", "fallback"):
            spec = getattr(self, which)
            if spec is None or not any(entry.backend == "vllm" for entry in spec.chain):
                continue
            chain = [entry.model_copy(update={"options": {"served_model_name": [self.served_model_name],
                                                          **entry.options}})
                     if entry.backend == "vllm" else entry for entry in spec.chain]
            object.__setattr__(self, which, spec.model_copy(update={"chain": chain}))
        return self

    def deployments(self) -> list[DeploymentSpec]:
        return [self.primary] + ([self.fallback] if self.fallback else [])

    def multiplexed_names(self) -> list[str]:
        """Extra models the primary loads on demand (served names = multiplexed model ids)."""
        return sorted(self.primary.multiplex.models) if self.primary.multiplex else []


class ModelsConfig(StrictModel):
    embedder: RoleConfig
    reranker: RoleConfig
    llm: RoleConfig
    tts: RoleConfig
    safety: RoleConfig
    translator: RoleConfig | None = Field(
        None, description="CTranslate2 translation models, one per language pair (multiplexed ids like `en-fr`)"
    )

    def roles(self) -> dict[str, RoleConfig]:
        roles = {"embedder": self.embedder, "reranker": self.reranker, "llm": self.llm, "tts": self.tts,
                 "safety": self.safety}
        return roles | ({"translator": self.translator} if self.translator else {})
