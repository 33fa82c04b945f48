"""GPU telemetry for routing, read through NVML. No GPU here: NVML is replaced by a stand-in module (pure logic:
which readings are taken, and what they are divided by)."""

from __future__ import annotations

import os
import sys
import types
from types import SimpleNamespace

import pytest

from deployments.gpu_stats import read_gpu_stats

GIB = 1024**3


def fake_nvml(processes: list[tuple[int, int]], *, temperature: float | Exception = 60.0,
              memory_fails: bool = False, with_temperature_v: bool = True) -> types.ModuleType:
    module = types.ModuleType("pynvml")
    module.NVML_TEMPERATURE_GPU = 0
    module.handles = []
    module.nvmlInit = lambda: None

    def by_index(index):
        module.handles.append(("index", index))
        return "handle"

    def by_uuid(uuid):
        module.handles.append(("uuid", uuid))
        return "handle"

    def memory_info(handle):
        if memory_fails:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return SimpleNamespace(total=80 * GIB, used=79 * GIB)

    def temperature_of(handle, sensor):
        if isinstance(temperature, Exception):
            raise temperature
        return temperature

    module.nvmlDeviceGetHandleByIndex = by_index
    module.nvmlDeviceGetHandleByUUID = by_uuid
    module.nvmlDeviceGetMemoryInfo = memory_info
    module.nvmlDeviceGetComputeRunningProcesses = lambda handle: [
        SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in processes]
    if with_temperature_v:
        module.nvmlDeviceGetTemperatureV = temperature_of
    else:
        module.nvmlDeviceGetTemperature = temperature_of
    return module


@pytest.fixture
def nvml(monkeypatch):
    def install(module: types.ModuleType) -> types.ModuleType:
        monkeypatch.setitem(sys.modules, "pynvml", module)
        return module
    return install


def test_memory_is_this_replicas_use_of_its_share_not_the_whole_device(nvml):
    # Another replica's engine holds 70 GiB of the GPU; this one (a 0.25 share = 20 GiB) holds 8 GiB.
    nvml(fake_nvml([(999_999, 70 * GIB), (os.getpid(), 8 * GIB)]))
    stats = read_gpu_stats("cuda", gpu_share=0.25)
    assert stats == {"gpu_memory_used_fraction": 0.4, "gpu_temperature_c": 60.0}


def test_a_replica_whose_processes_nvml_cannot_see_reports_no_memory_rather_than_the_devices(nvml):
    nvml(fake_nvml([(999_999, 79 * GIB)]))
    assert read_gpu_stats("cuda", gpu_share=0.5) == {"gpu_temperature_c": 60.0}


def test_one_reading_failing_leaves_the_other(nvml):
    nvml(fake_nvml([(os.getpid(), 40 * GIB)], temperature=RuntimeError("NVML_ERROR_NOT_SUPPORTED")))
    assert read_gpu_stats("cuda") == {"gpu_memory_used_fraction": 0.5}
    nvml(fake_nvml([(os.getpid(), 40 * GIB)], memory_fails=True))
    assert read_gpu_stats("cuda") == {"gpu_temperature_c": 60.0}


def test_the_current_temperature_call_is_used_and_the_deprecated_one_only_on_an_old_nvml(nvml):
    module = nvml(fake_nvml([], with_temperature_v=False, temperature=71.0))
    assert not hasattr(module, "nvmlDeviceGetTemperatureV")
    assert read_gpu_stats("cuda") == {"gpu_temperature_c": 71.0}


def test_the_gpu_is_found_by_uuid_when_ray_names_it_so(nvml, monkeypatch):
    module = nvml(fake_nvml([]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5c1e0b9a-7f2d-4c1a-9d55-1b2c3d4e5f60,GPU-other")
    read_gpu_stats("cuda")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    read_gpu_stats("cuda")
    assert module.handles == [("uuid", "GPU-5c1e0b9a-7f2d-4c1a-9d55-1b2c3d4e5f60"), ("index", 3)]


def test_nothing_is_read_on_cpu_or_without_nvml(nvml, monkeypatch):
    nvml(fake_nvml([(os.getpid(), GIB)]))
    assert read_gpu_stats("cpu") is None
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: import fails
    assert read_gpu_stats("cuda") is None
