"""GPU telemetry for routing stats, read with nvidia-ml-py (the `gpu` extra) when a CUDA GPU is in use.

Memory is this replica's own: what its processes (the replica and the engine processes it started, such as vLLM's
EngineCore) hold on the GPU, over the replica's share of the device (`num_gpus`). Device-wide use would make every
replica on a shared GPU look short of memory for good once one engine preallocates its KV cache. Where NVML cannot
see this replica's processes (another PID namespace, as in some containers), memory is not reported rather than
guessed. Temperature is the device's. Each reading stands alone: one that fails leaves the others.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger("ray.serve.eduserve.deployments")


def _replica_pids() -> set[int]:
    import psutil

    me = psutil.Process()
    return {me.pid, *(child.pid for child in me.children(recursive=True))}


def _device_handle(pynvml: Any) -> Any:
    """NVML numbers GPUs physically; Ray sets CUDA_VISIBLE_DEVICES to this replica's GPU(s), by index or UUID."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
    if visible.startswith(("GPU-", "MIG-")):
        return pynvml.nvmlDeviceGetHandleByUUID(visible)
    return pynvml.nvmlDeviceGetHandleByIndex(int(visible))


def _memory_used_fraction(pynvml: Any, handle: Any, gpu_share: float) -> float | None:
    total = pynvml.nvmlDeviceGetMemoryInfo(handle).total
    ours = _replica_pids()
    processes = [p for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle) if p.pid in ours]
    if not processes:
        return None
    used = sum(p.usedGpuMemory or 0 for p in processes)
    return round(used / (total * min(max(gpu_share, 1e-6), 1.0)), 4)


def _temperature_c(pynvml: Any, handle: Any) -> float:
    read = getattr(pynvml, "nvmlDeviceGetTemperatureV", None)  # nvmlDeviceGetTemperature is deprecated
    if read is None:
        return float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))
    return float(read(handle, pynvml.NVML_TEMPERATURE_GPU))


def read_gpu_stats(torch_device: str, gpu_share: float = 1.0) -> dict[str, Any] | None:
    """This replica's memory use of its GPU share and the GPU's temperature, or None when nothing is readable."""
    if not torch_device.startswith("cuda"):
        return None
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = _device_handle(pynvml)
    except Exception as exc:  # telemetry must never break serving
        logger.debug("GPU stats unavailable: %s", exc)
        return None
    stats: dict[str, Any] = {}
    for name, read in (("gpu_memory_used_fraction", lambda: _memory_used_fraction(pynvml, handle, gpu_share)),
                       ("gpu_temperature_c", lambda: _temperature_c(pynvml, handle))):
        try:
            value = read()
        except Exception as exc:  # noqa: BLE001 - one reading failing leaves the others
            logger.debug("GPU %s unavailable: %s", name, exc)
            continue
        if value is not None:
            stats[name] = value
    return stats or None
