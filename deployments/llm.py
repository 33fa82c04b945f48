"""The LLM deployment: OpenAI chat and text completions (for /v1), and plain chat (for /v2 sessions and the content
tools), whole or streamed, on any LLM backend.

- vLLM answers OpenAI requests through its own serving layer and batches continuously by itself;
- token-level backends (CTranslate2, transformers) answer through `llm_openai.TokenLevelOpenAI`, their requests
  gathered by `@serve.batch` (a batch that fails is retried one request at a time, so a bad request fails alone).

A request the model cannot take (prompt too long, a feature the engine lacks) is answered with a Refusal rather
than raised: a caller's mistake must not look like a replica failure to the GPU/CPU router. Engine failures do
raise, and `check_health` fails a replica whose engine died, so Serve replaces it.

Plain chat requests are dicts the ingress validated:
    {"messages": [{"role", "content"}], "max_tokens", "temperature", "top_p", "stop": [...], "seed",
     "history_token_budget": int | None}
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ray import serve

from deployments.backends.llm_base import AdaptersNotSupported, LLMBackend, LoRAAdapter, SamplingParams
from deployments.backends.registry import LLM_BACKENDS
from deployments.base import ModelReplica, counted
from deployments.common import Refusal, load_chain_async
from deployments.llm_openai import TokenLevelOpenAI
from deployments.llm_text import IncrementalDecoder, PromptTooLong, finish_reason, fit_history, usage
from deployments.metrics import StreamTimer, record_tokens
from deployments.spec import DeploymentSpec

logger = logging.getLogger("ray.serve.eduserve.llm")


class GenerationStats:
    def __init__(self) -> None:
        self.requests = 0
        self.streams_active = 0
        self.streams_cancelled = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.last_cancelled_after_tokens: int | None = None

    def count(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Tokens of a request (or of part of a stream), here and in the Serve metrics."""
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        record_tokens(prompt_tokens, completion_tokens)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Failed:
    """One request's failure inside a batch that otherwise succeeded."""

    def __init__(self, exc: BaseException):
        self.exc = exc


Generate = Callable[[list[list[int]], list[SamplingParams], list[Any]], Awaitable[list[list[int]]]]


async def generate_isolated(generate: Generate, items: list[tuple[list[int], SamplingParams, Any]]
                            ) -> list[list[int] | Failed]:
    """One batched generate call for (prompt, params, adapter) items; if it fails, each item again on its own,
    so a request the engine cannot take fails alone instead of failing (and counting against) the batch."""
    prompts, params, adapters = (list(column) for column in zip(*items, strict=True))
    try:
        return list(await generate(prompts, params, adapters))
    except Exception:
        if len(items) == 1:
            raise
        logger.warning("a batch of %d generations failed; retrying them one by one", len(items))
    outputs: list[list[int] | Failed] = []
    for prompt, sp, adapter in items:
        try:
            outputs.append((await generate([prompt], [sp], [adapter]))[0])
        except Exception as exc:
            outputs.append(Failed(exc))
    return outputs


@serve.deployment
class LLM(ModelReplica):
    role = "llm"
    factories = LLM_BACKENDS
    backend: LLMBackend

    async def __init__(self, spec: DeploymentSpec, offline: bool = True, models_dir: str | None = None):
        # Async: vLLM finishes starting (its OpenAI serving layer) on the replica's event loop.
        self._configure(spec, offline, models_dir)
        self._use(await load_chain_async(spec.chain, self.factories, self.device, self.models_dir))
        self.generation = GenerationStats()
        self.continuous_batching = hasattr(self.backend, "openai")
        self.openai_layer = self.backend if self.continuous_batching else TokenLevelOpenAI(
            self.loaded.spec.backend, self.backend.tokenizer, self.backend.context_length,
            lambda prompt, params: self._generate(prompt, params, None), self._count_stream,
        )

    def __del__(self) -> None:
        """Serve calls this when it stops the replica: the engine's own processes stop with it."""
        backend = getattr(self, "backend", None)
        if backend is not None and hasattr(backend, "shutdown"):
            backend.shutdown()

    async def check_health(self) -> None:
        """Serve calls this every `health_check_period_s`; raising marks the replica unhealthy (it is replaced)."""
        if hasattr(self.backend, "check_health"):
            await self.backend.check_health()

    # ------------------------------------------------------------------ OpenAI requests (/v1)

    @counted
    async def openai(self, kind: str, body: dict[str, Any]) -> dict[str, Any] | Refusal:
        """A whole chat completion (`kind` chat) or text completion (completion), or a Refusal.
        A LoRA adapter (the multiplexed model id) is registered with vLLM first, which then resolves `model`."""
        _, error = await self._adapter()
        if error:
            return error
        self._inject_faults()
        self.generation.requests += 1
        result = await self.openai_layer.openai(kind, body)
        if not isinstance(result, Refusal):
            self._count_usage(result.get("usage"))
        return result

    @counted
    async def openai_stream(self, kind: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any] | Refusal]:
        """Chunks in the OpenAI shape, or one Refusal item. Closing the stream stops the generation.
        Usage is always asked of the engine, on every chunk (`continuous_usage_stats`): it is counted here, and the
        ingress counts a stream the client left as far as it got; the ingress drops what the client did not ask."""
        timer, generated = StreamTimer(), 0
        _, error = await self._adapter()
        if error:
            yield error
            return
        self._inject_faults()
        self.generation.requests += 1
        options = {**(body.get("stream_options") or {}), "include_usage": True, "continuous_usage_stats": True}
        chunks = self.openai_layer.openai_stream(kind, {**body, "stream_options": options})
        try:
            async for chunk in chunks:
                if not isinstance(chunk, Refusal):  # a refusal passes through as it is
                    if "usage" in chunk and not chunk.get("choices"):
                        generated = self._count_usage(chunk["usage"])
                    elif chunk.get("choices"):
                        timer.tokens_arrived()
                yield chunk
        finally:
            timer.finish(generated)
            await chunks.aclose()

    def _count_usage(self, counts: dict[str, int] | None) -> int:
        """Counts an OpenAI `usage`; the completion tokens."""
        if not counts:
            return 0
        completion = counts.get("completion_tokens") or 0
        self.generation.count(counts.get("prompt_tokens") or 0, completion)
        return completion

    # ------------------------------------------------------------------ plain chat (/v2, content tools)

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
    def _error(exc: Exception) -> Refusal:
        return Refusal("context_length_exceeded", str(exc))

    async def _wrap_multiplexed(self, model_id: str, backend: Any) -> Any:
        """Multiplexed LLM entries are LoRA adapters served by the base model's engine."""
        if not isinstance(backend, LoRAAdapter):
            raise AdaptersNotSupported(f"{model_id}: LLM multiplexed models must use the `lora` backend")
        if not hasattr(self.backend, "load_adapter"):
            raise AdaptersNotSupported(f"{model_id}: LoRA adapters need the vLLM engine")
        return await self.backend.load_adapter(model_id, backend)

    async def _adapter(self) -> tuple[Any, Refusal | None]:
        """The LoRA adapter the request names (Serve's multiplexed model id), or None for the base model."""
        try:
            selected, error = await self._select()
        except AdaptersNotSupported as exc:
            return None, Refusal("model_not_found", str(exc), "model")
        return (None if selected is self.backend else selected), error

    @counted
    async def chat(self, request: dict[str, Any]) -> dict[str, Any] | Refusal:
        adapter, error = await self._adapter()
        if error:
            return error
        try:
            prompt, params, stop = self._prepare(request)
        except PromptTooLong as exc:
            return self._error(exc)
        self._inject_faults()
        self.generation.requests += 1
        ids = await self._generate(prompt, params, adapter)
        decoder = IncrementalDecoder(self.backend.tokenizer, stop)
        decoder.push(ids)
        self.generation.count(len(prompt), len(ids))
        return {
            "text": decoder.text,
            "finish_reason": finish_reason(decoder.stopped, len(ids), params.max_tokens),
            "usage": usage(len(prompt), len(ids)),
        }

    async def _generate(self, prompt: list[int], params: SamplingParams, adapter: Any) -> list[int]:
        """New token ids: straight to a continuously batching engine, else through the replica-wide batch."""
        if self.continuous_batching:
            return (await self.backend.generate([prompt], [params], [adapter]))[0]
        result = await self._batch((prompt, params, adapter))
        if isinstance(result, Failed):
            raise result.exc
        return result

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _batch(self, items: list[tuple[list[int], SamplingParams, Any]]) -> list[list[int] | Failed]:
        outputs = await generate_isolated(self.backend.generate, items)
        self.stats.record(len(items), 1)
        return outputs

    @counted
    async def chat_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any] | Refusal]:
        """Yields {"delta": str, "usage"} items (usage so far), then {"finish_reason", "usage"}; or one Refusal
        item."""
        timer = StreamTimer()
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
        decoder = IncrementalDecoder(self.backend.tokenizer, stop)
        generated = 0
        tokens = self._count_stream(prompt, params, adapter)
        self.generation.count(len(prompt), 0)
        try:
            async for new_ids in tokens:
                generated += len(new_ids)
                timer.tokens_arrived()
                delta = decoder.push(new_ids)
                if delta:
                    yield {"delta": delta, "usage": usage(len(prompt), generated)}
                if decoder.stopped:
                    break
            tail = decoder.finish()
            if tail:
                yield {"delta": tail, "usage": usage(len(prompt), generated)}
            yield {
                "finish_reason": finish_reason(decoder.stopped, generated, params.max_tokens),
                "usage": usage(len(prompt), generated),
            }
        finally:
            await tokens.aclose()
            self.generation.count(0, generated)
            timer.finish(generated)

    async def _count_stream(self, prompt: list[int], params: SamplingParams,
                            adapter: Any = None) -> AsyncIterator[list[int]]:
        """The backend's token stream, with the replica's stream counters; closing it (client gone, stop string,
        error) stops the generation in the backend."""
        self.generation.streams_active += 1
        tokens = self.backend.stream(prompt, params, adapter)
        generated = 0
        completed = False
        try:
            async for new_ids in tokens:
                generated += len(new_ids)
                yield new_ids
            completed = True
        finally:
            # Counted before awaiting: a second cancellation may interrupt the close.
            self.generation.streams_active -= 1
            if not completed:
                self.generation.streams_cancelled += 1
                self.generation.last_cancelled_after_tokens = generated
                logger.info("stream stopped after %d tokens (client gone, stop string or cancelled)", generated)
            await tokens.aclose()

    # ------------------------------------------------------------------ status

    def _details(self) -> dict[str, Any]:
        details: dict[str, Any] = {"context_length": self.backend.context_length,
                                   "continuous_batching": self.continuous_batching,
                                   "generation": self.generation.as_dict()}
        if hasattr(self.backend, "engine_stats"):
            details["engine"] = self.backend.engine_stats()
        return details
