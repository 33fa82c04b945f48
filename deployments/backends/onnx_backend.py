"""Embeddings from a transformer encoder exported to ONNX (`make models` exports the packaged MiniLM), run by ONNX
Runtime or by OpenVINO, pooled and normalised here as sentence-transformers does for the same model (`embedding.json`
beside the graph says how).

Pre-process: the model's own tokenizer (truncation at its window); core: one run of the graph (`_run`, per runtime);
post-process: mean or CLS pooling, L2 normalisation. Measured against sentence-transformers on the same weights:
ONNX Runtime's vectors agree to cosine 1.0, OpenVINO's in bfloat16 (its default where the CPU computes in it) to
> 0.9999; speeds in bench/RESULTS.md.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deployments.common import DeviceInfo, ModelSourceError, resolve_model_source
from deployments.spec import BackendSpec


class ExportedEncoder:
    """Tokenizer, pooling and normalisation around an exported graph; subclasses load the graph, name its inputs
    (`inputs`) and run it."""

    inputs: set[str]  # the graph's input names, among the tokenizer's arrays

    def __init__(self, spec: BackendSpec, device: DeviceInfo):
        import torch
        from transformers import AutoTokenizer

        folder = Path(resolve_model_source(spec.model))
        self.graph = folder / spec.options.get("file", "model.onnx")
        if not self.graph.exists() or not (folder / "embedding.json").exists():
            raise ModelSourceError(
                f"{folder} has no {self.graph.name} and embedding.json; run `eduserve prepare-models`")
        config = json.loads((folder / "embedding.json").read_text())
        self.pooling = config["pooling"]
        if self.pooling not in ("mean", "cls"):
            raise ModelSourceError(f"{folder}: pooling {self.pooling!r} is not supported (mean or cls)")
        self.normalize = bool(config.get("normalize", True))
        self.max_seq_length = int(spec.options.get("max_seq_length", config["max_seq_length"]))
        self.dimensions = int(config["dimensions"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        # The replica set torch's thread count from the deployment's torch_threads: the same budget here.
        self.threads = int(spec.options.get("intra_op_threads", torch.get_num_threads()))

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """The graph's first output (the token states, batch x tokens x hidden) for its inputs."""
        raise NotImplementedError

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_seq_length)
        return [len(ids) for ids in encoded["input_ids"]]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        encoded = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_seq_length,
                                 return_tensors="np")
        hidden = np.asarray(self._run({name: encoded[name].astype(np.int64) for name in self.inputs}),
                            dtype=np.float32)
        if self.pooling == "cls":
            vectors = hidden[:, 0]
        else:
            mask = encoded["attention_mask"][..., None].astype(np.float32)
            vectors = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        if self.normalize:
            vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        return np.ascontiguousarray(vectors, dtype=np.float32)


class OnnxEmbedding(ExportedEncoder):
    """ONNX Runtime, all graph optimisations, fp32."""

    def __init__(self, spec: BackendSpec, device: DeviceInfo):
        import onnxruntime as ort

        super().__init__(spec, device)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # ONNX Runtime's workers spin between passes by default: cores the proxy and ingress need on a shared node.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.graph), options, providers=["CPUExecutionProvider"])
        self.inputs = {node.name for node in self.session.get_inputs()}

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feed)[0]


class OpenVinoEmbedding(ExportedEncoder):
    """OpenVINO's CPU plugin on the same graph, latency mode (one stream over the replica's threads).

    Options: `inference_precision` (OpenVINO's default is bfloat16 on a CPU that computes in it natively,
    AVX512_BF16 or AMX, and f32 elsewhere; `f32` forces full precision); `properties`: other CPU plugin properties."""

    def __init__(self, spec: BackendSpec, device: DeviceInfo):
        import openvino

        super().__init__(spec, device)
        # Threads unpinned and work shared out dynamically: the replica shares its cores with the ingress, and a
        # pinned, statically split pass waits for whichever of its threads the OS has preempted.
        config = {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False,
                  "TBB_PARTITIONER": "AUTO"}
        if "inference_precision" in spec.options:
            config["INFERENCE_PRECISION_HINT"] = str(spec.options["inference_precision"])
        config.update(spec.options.get("properties", {}))  # any other OpenVINO CPU property, as the profile sets it
        self.model = openvino.Core().compile_model(str(self.graph), "CPU", config)
        self.inputs = {port.get_any_name() for port in self.model.inputs}
        self.precision = self.model.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # bf16 or f32
        self._requests = threading.local()  # an infer request is not safe to share between threads

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self.model.create_infer_request()
        return request.infer(feed)[0]
