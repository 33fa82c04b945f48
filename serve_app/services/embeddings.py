"""Embeddings: limits, one call to the Embedder, OpenAI-shaped output."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np

from serve_app.catalog import ModelCatalog
from serve_app.coalesce import Coalescer
from serve_app.errors import EduserveError, ErrorCode
from serve_app.protocol.embeddings import EmbeddingRequest
from serve_app.routing import ModelRouter
from serve_app.services.input_window import InputWindow, Side
from serve_app.services.usage import Consumed, UsageMeter
from serve_app.settings import IngressSettings, LimitSettings


def check_text_limits(texts: list[str] | list[str | list[int]], max_count: int, max_chars: int, what: str) -> None:
    """Counts, and lengths (characters of a text; token ids count one character each)."""
    if len(texts) > max_count:
        raise EduserveError(
            ErrorCode.PAYLOAD_TOO_LARGE, f"too many {what}: {len(texts)} > {max_count} per request"
        )
    for index, text in enumerate(texts):
        if len(text) > max_chars:
            raise EduserveError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"{what} {index} is too long: {len(text)} characters > {max_chars}",
            )


BASE64_DTYPES = {"float32": "f4", "float16": "f2", "bfloat16": "u2"}


def encode_vector(vector: np.ndarray, encoding_format: str, dtype: str = "float32",
                  endianness: str = "little") -> np.ndarray | str:
    """The float32 vector itself (the response renders it as JSON), or base64 of its bytes: float32 little-endian
    as the openai SDK expects, or vLLM's `embed_dtype` (float16, bfloat16: float32's top half, rounded to nearest
    even) and `endianness`."""
    if encoding_format != "base64":
        return np.ascontiguousarray(vector, dtype=np.float32)
    order = {"little": "<", "big": ">"}.get(endianness, "=")  # "native": this machine's
    if dtype == "bfloat16":
        bits = np.ascontiguousarray(vector, dtype=np.float32).view(np.uint32)
        vector = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    data = vector.astype(order + BASE64_DTYPES[dtype], copy=False).tobytes()
    return base64.b64encode(data).decode("ascii")


class EmbeddingService:
    def __init__(self, router: ModelRouter, catalog: ModelCatalog, limits: LimitSettings, ingress: IngressSettings,
                 meter: UsageMeter):
        self.router = router
        self.catalog = catalog
        self.limits = limits
        self.meter = meter
        self.coalescer: Coalescer[str, tuple[np.ndarray, int]] | None = None
        self._windows: dict[str | None, InputWindow] = {}
        self._windows_lock = asyncio.Lock()
        # Only for a role served by one deployment: with a fallback tier, the router needs each request's own call
        # to send the overflow to the CPU deployment, where merging would hold it back behind the GPU's call.
        if ingress.coalesce_max_inputs and router.fallback is None:
            self.coalescer = Coalescer(self._embed_merged, ingress.coalesce_max_inputs, ingress.coalesce_max_inflight,
                                       ingress.coalesce_max_wait_ms / 1000)

    async def embed(self, texts: list[str] | list[str | list[int]], model_id: str | None = None, *,
                    truncate: int | None, side: Side = "right") -> tuple[np.ndarray, list[int]]:
        """Vectors of `texts` (texts or token ids; the default model unless a multiplexed one is named), after the
        HTTP API's limits. An input longer than the model reads is refused, or cut when `truncate` is set (vLLM's
        `truncate_prompt_tokens`; -1: the model's window). Other services (RAG) call this too. Texts of concurrent
        requests share model calls."""
        check_text_limits(texts, self.limits.max_inputs_per_request, self.limits.max_input_chars, "input")
        window = await self.window(model_id)
        if not window.fits_at_a_glance(texts, truncate):  # tokenising 256 long texts takes seconds: off the loop
            texts = await asyncio.to_thread(window.fit, texts, truncate, side)
        await self.meter.admit()
        if self.coalescer is None or not texts or not all(isinstance(text, str) for text in texts):
            result = await self._call(model_id, texts)
            vectors, token_counts = result["embeddings"], result["token_counts"]
        else:
            rows = await self.coalescer.submit(model_id, texts)
            vectors, token_counts = np.stack([vector for vector, _ in rows]), [tokens for _, tokens in rows]
        model = model_id or self.catalog.resolve("embedder", None).name
        self.meter.record(model, "embedding", Consumed(prompt_tokens=int(sum(token_counts))))
        return vectors, token_counts

    async def window(self, model_id: str | None = None) -> InputWindow:
        """The model's tokenizer and input size, asked of the Embedder once per model."""
        if model_id not in self._windows:
            async with self._windows_lock:
                if model_id not in self._windows:
                    answer = await self.router.call("input_window", multiplexed_model_id=model_id)
                    self._windows[model_id] = await asyncio.to_thread(
                        InputWindow.from_model, answer["tokenizer"], answer["max_tokens"])
        return self._windows[model_id]

    async def _call(self, model_id: str | None, texts: list[str] | list[str | list[int]]) -> dict[str, Any]:
        return await self.router.call("embed", texts, multiplexed_model_id=model_id)

    async def _embed_merged(self, model_id: str | None, texts: list[str]) -> list[tuple[np.ndarray, int]]:
        result = await self._call(model_id, texts)
        return list(zip(result["embeddings"], result["token_counts"], strict=True))

    async def create(self, request: EmbeddingRequest) -> dict[str, Any]:
        model = self.catalog.resolve("embedder", request.model)
        truncate = request.truncate_prompt_tokens
        if truncate is None and self.limits.embedding_auto_truncate:
            truncate = -1
        vectors, token_counts = await self.embed(request.inputs(), model.multiplexed_id, truncate=truncate,
                                                 side=request.truncation_side)
        if request.dimensions is not None and request.dimensions != vectors.shape[1]:
            raise EduserveError(
                ErrorCode.BAD_REQUEST,
                f"dimensions: model {model.name!r} produces {vectors.shape[1]}-dimensional vectors only",
                param="dimensions",
            )
        tokens = int(sum(token_counts))
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": encode_vector(v, request.encoding_format, request.embed_dtype,
                                                                 request.endianness)}
                for i, v in enumerate(vectors)
            ],
            "model": model.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
