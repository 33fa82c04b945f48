"""The LLM backend interface (token level) and what the LLM deployment does around it.

Backends turn prompt token ids into new token ids (core). For backends without an OpenAI layer of their own, the
deployment does the rest once for all of them: chat template and context check (pre-process), incremental
detokenisation, stop strings and finish reasons (post-process); see llm_openai.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def group_key(self) -> tuple:
        """Requests with equal keys may share one batched generate call."""
        return (self.max_tokens, self.temperature, self.top_p, self.seed)


@dataclass(frozen=True)
class LoRAAdapter:
    """A LoRA adapter on disk, served on top of the base model by backends that support adapters (vLLM)."""

    path: str
    options: dict[str, Any]


def lora_adapter(spec: Any, device: Any = None) -> LoRAAdapter:
    """The `lora` backend: an adapter's description (no weights are loaded here)."""
    return LoRAAdapter(spec.model, dict(spec.options))


class AdaptersNotSupported(RuntimeError):
    pass


class LLMBackend(Protocol):
    tokenizer: Any  # a transformers tokenizer: chat template, counting, decoding
    context_length: int

    async def generate(self, prompts: Sequence[list[int]], params: Sequence[SamplingParams],
                       adapters: Sequence[Any] | None = None) -> list[list[int]]:
        """New token ids for each prompt (EOS excluded), batched where the backend can."""

    def stream(self, prompt: list[int], params: SamplingParams, adapter: Any = None) -> AsyncIterator[list[int]]:
        """New token ids as they are decoded. Closing the iterator must stop the generation."""

    # Optional, for engines that have them (vLLM): `async load_adapter(name, LoRAAdapter)` → the engine's
    # handle of a LoRA adapter; `async start()`, `shutdown()`, `async check_health()`; and `openai(kind, body)` /
    # `openai_stream(kind, body)`, an OpenAI serving layer of the engine's own.


# The request field that holds the prompt, by kind of OpenAI request: what an error about the prompt as a whole
# (past the context, a token id outside the vocabulary) names in `param`, as OpenAI's errors do.
PROMPT_FIELD = {"chat": "messages", "completion": "prompt"}

# OpenAI request fields that never change what is generated: every engine accepts them.
NEUTRAL_FIELDS = frozenset({"model", "user", "metadata", "store", "service_tier", "stream", "stream_options",
                            "parallel_tool_calls", "prompt_cache_key", "safety_identifier"})
# Fields accepted, by an engine that does not honour them, only at these values (what OpenAI does without them).
INERT_VALUES: dict[str, Callable[[Any], bool]] = {
    "tools": lambda v: not v,
    "tool_choice": lambda v: v == "none",
    "functions": lambda v: not v,
    "function_call": lambda v: v == "none",
    "response_format": lambda v: isinstance(v, dict) and v.get("type") == "text",
    "logprobs": lambda v: v is False or v == 0,
    "top_logprobs": lambda v: v == 0,
    "presence_penalty": lambda v: v == 0,
    "frequency_penalty": lambda v: v == 0,
    "logit_bias": lambda v: not v,
    "echo": lambda v: v is False,
    "best_of": lambda v: v == 1,
    "suffix": lambda v: not v,
    "modalities": lambda v: v == ["text"],
}


def unhonoured_fields(body: dict[str, Any], honoured: Iterable[str]) -> list[str]:
    """The fields of an OpenAI request that an engine honouring `honoured` would silently ignore although they
    ask for something (a 400 names them, never a 200 that ignores what was asked)."""
    accepted = NEUTRAL_FIELDS | set(honoured)
    return [name for name, value in body.items()
            if value is not None and name not in accepted
            and not (name in INERT_VALUES and INERT_VALUES[name](value))]


def no_adapters(adapters: Sequence[Any] | None) -> None:
    if adapters and any(a is not None for a in adapters):
        raise AdaptersNotSupported("LoRA adapters need the vllm backend")


_DONE = object()


async def iterate_in_thread(produce: Callable[[threading.Event], Iterator[Any]]) -> AsyncIterator[Any]:
    """Run a blocking iterator in a thread and yield its items here. When the consumer stops (break, client
    gone, cancellation), the `stop` event passed to `produce` is set so the thread stops producing."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def run() -> None:
        try:
            for item in produce(stop):
                loop.call_soon_threadsafe(queue.put_nowait, item)
                if stop.is_set():
                    break
        except BaseException as exc:  # handed to the consumer
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    # A thread per stream, not the loop's default executor: that one has a handful of workers and would queue
    # the streams beyond them.
    threading.Thread(target=run, name="llm-stream", daemon=True).start()
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the thread sees it at its next token and ends
