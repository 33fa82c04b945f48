"""infinity-emb as the peer of bench/embeddings.py: its own virtualenv (bench/.venvs/infinity, made on first use with
the local CPU torch wheel and infinity-emb 0.0.78 with its torch and optimum (ONNX Runtime) engines), serving
the same packaged MiniLM offline. Its optimum engine gets the same fp32 ONNX graph eduserve's `onnx` backend
runs (what `make models` exported), beside the packaged model's config and tokenizer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

VERSION = "0.0.78"
VENV = Path(__file__).parent / ".venvs" / "infinity"


def ensure_installed() -> Path:
    binary = VENV / "bin" / "infinity_emb"
    if binary.exists() and (VENV / ".engines-installed").exists():
        return binary
    print(f"installing infinity-emb {VERSION} into {VENV} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "pip"), "install", "--quiet"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # the local CPU wheel first, never a CUDA build
    subprocess.run([*pip, f"infinity-emb[torch,server,optimum]=={VERSION}"], check=True)
    (VENV / ".engines-installed").touch()
    return binary


def onnx_model_dir(model_dir: Path, onnx_file: Path) -> Path:
    """A folder infinity's optimum engine loads offline: the packaged model's config and tokenizer, our ONNX graph."""
    folder = Path(__file__).parent / "out" / "infinity-onnx-model"
    folder.mkdir(parents=True, exist_ok=True)
    for source in [*model_dir.glob("*.json"), model_dir / "vocab.txt", onnx_file]:
        target = folder / source.name
        if not target.exists():
            target.symlink_to(source.resolve())
    return folder


@contextmanager
def serving(model_path: str, port: int, engine: str = "torch"):
    """infinity on 127.0.0.1:port until the block ends; yields its base URL and model id."""
    binary = ensure_installed()
    log_path = Path(__file__).parent / "out" / f"infinity-{engine}.log"
    # infinity hands optimum the ONNX file's path as it found it in the folder; optimum 2 (what its extra resolves
    # now) wants it relative to the folder, so infinity runs in the folder and is given "." as the model.
    cwd, model_id = (model_path, ".") if engine == "optimum" else (None, model_path)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(binary), "v2", "--model-id", model_id, "--engine", engine, "--device", "cpu", "--port",
             str(port), "--host", "127.0.0.1", "--no-bettertransformer"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=cwd,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                models = httpx.get(f"{url}/models", timeout=5).json()["data"]
                break
            except (httpx.HTTPError, KeyError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"infinity did not start; see {log_path}") from None
                time.sleep(1)
        yield url, models[0]["id"]
    finally:
        process.terminate()
        process.wait(timeout=60)
