"""The LLM deployment: chat messages in, text out (whole, or streamed as deltas), on any LLM backend.

Requests are plain dicts (the ingress validated them):
    {"messages": [{"role", "content"}], "max_tokens", "temperature", "top_p", "stop": [...], "seed",
     "history_token_budget": int | None}
A request the model cannot take (prompt too long) is answered with {"error": {"code", "message"}} rather than
raised: a user's mistake must not look like a replica failure to the GPU/CPU router.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from deployments.backends.llm_base import AdaptersNotSupported, LLMBackend, LoRAAdapter, SamplingParams
from deployments.backends.registry import LLM_BACKENDS
from deployments.base import ModelReplica
from deployments.llm_text import IncrementalDecoder, PromptTooLong, finish_reason, fit_history

logger = logging.getLogger("ray.serve.eduserve.llm")


class GenerationStats:
    def __init__(self) -> None:
        self.requests = 0
        self.streams_active = 0
        self.streams_cancelled = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.last_cancelled_after_tokens: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """Token counts in the OpenAI shape, as every answer reports them."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


@serve.deployment
class LLM(ModelReplica):
    role = "llm"
    factories = LLM_BACKENDS
    backend: LLMBackend

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.generation = GenerationStats()

    # ------------------------------------------------------------------ pre-process

    def _prepare(self, request: dict[str, Any]) -> tuple[list[int], SamplingParams, list[str]]:
        params = SamplingParams(
            max_tokens=int(request["max_tokens"]),
            temperature=float(request.get("temperature", 0.7)),
            top_p=float(request.get("top_p", 1.0)),
            seed=request.get("seed"),
        )
        _, prompt = fit_history(
            self.backend.tokenizer, request["messages"], request.get("history_token_budget"),
            self.backend.context_length, params.max_tokens,
        )
        return prompt, params, list(request.get("stop") or [])

    @staticmethod
    def _error(exc: Exception) -> dict[str, Any]:
        return {"error": {"code": "context_length_exceeded", "message": str(exc)}}

    def _wrap_multiplexed(self, model_id: str, backend: Any) -> Any:
        """Multiplexed LLM entries are LoRA adapters served by the base model's engine."""
        if not isinstance(backend, LoRAAdapter):
            raise AdaptersNotSupported(f"{model_id}: LLM multiplexed models must use the `lora` backend")
        return self.backend.load_adapter(model_id, backend)

    async def _adapter(self) -> tuple[Any, dict[str, Any] | None]:
        """The LoRA adapter the request names (Serve's multiplexed model id), or None for the base model."""
        selected, error = await self._select()
        return (None if selected is self.backend else selected), error

    # ------------------------------------------------------------------ whole answers

    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        adapter, error = await self._adapter()
        if error:
            return error
        try:
            prompt, params, stop = self._prepare(request)
        except PromptTooLong as exc:
            return self._error(exc)
        self.generation.requests += 1
        ids = await self._batch((prompt, params, adapter))
        decoder = IncrementalDecoder(self.backend.tokenizer, stop)
        decoder.push(ids)
        self.generation.prompt_tokens += len(prompt)
        self.generation.completion_tokens += len(ids)
        return {
            "text": decoder.text,
            "finish_reason": finish_reason(decoder.stopped, len(ids), params.max_tokens),
            "usage": usage(len(prompt), len(ids)),
        }

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _batch(self, items: list[tuple[list[int], SamplingParams, Any]]) -> list[list[int]]:
        self._inject_faults()
        prompts, params, adapters = zip(*items, strict=True)
        outputs = await self.backend.generate(list(prompts), list(params), list(adapters))
        self.stats.record(len(items), 1)
        return outputs

    # ------------------------------------------------------------------ streams

    async def chat_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Yields {"delta": str} items, then {"finish_reason", "usage"}; or one {"error"} item."""
        adapter, error = await self._adapter()
        if error:
            yield error
            return
        try:
            prompt, params, stop = self._prepare(request)
        except PromptTooLong as exc:
            yield self._error(exc)
            return
        self._inject_faults()
        self.generation.requests += 1
        self.generation.streams_active += 1
        decoder = IncrementalDecoder(self.backend.tokenizer, stop)
        generated = 0
        completed = False
        tokens = self.backend.stream(prompt, params, adapter)
        try:
            async for new_ids in tokens:
                generated += len(new_ids)
                delta = decoder.push(new_ids)
                if delta:
                    yield {"delta": delta}
                if decoder.stopped:
                    break
            tail = decoder.finish()
            if tail:
                yield {"delta": tail}
            completed = True
            yield {
                "finish_reason": finish_reason(decoder.stopped, generated, params.max_tokens),
                "usage": usage(len(prompt), generated),
            }
        finally:
            # Closing the backend's iterator stops its generation (client gone, stop string, error).
            await tokens.aclose()
            self.generation.streams_active -= 1
            self.generation.prompt_tokens += len(prompt)
            self.generation.completion_tokens += generated
            if not completed:
                self.generation.streams_cancelled += 1
                self.generation.last_cancelled_after_tokens = generated
                logger.info("stream stopped after %d tokens (client gone or cancelled)", generated)

    # ------------------------------------------------------------------ status

    def _details(self) -> dict[str, Any]:
        return {"context_length": self.backend.context_length, "generation": self.generation.as_dict()}
