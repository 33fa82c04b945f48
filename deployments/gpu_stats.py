"""GPU telemetry for routing stats, read with nvidia-ml-py (the `gpu` extra) when a CUDA GPU is in use."""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger("ray.serve.eduserve.deployments")


def read_gpu_stats(torch_device: str) -> dict[str, Any] | None:
    """Memory use and temperature of the GPU behind `torch_device` (e.g. "cuda"), or None when not readable."""
    if not torch_device.startswith("cuda"):
        return None
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        # NVML numbers GPUs physically; Ray sets CUDA_VISIBLE_DEVICES to this replica's GPU(s).
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
        handle = pynvml.nvmlDeviceGetHandleByIndex(int(visible))
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        temperature = pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
        return {
            "gpu_memory_used_fraction": round(memory.used / memory.total, 4),
            "gpu_temperature_c": float(temperature),
        }
    except Exception as exc:  # telemetry must never break serving
        logger.debug("GPU stats unavailable: %s", exc)
        return None
