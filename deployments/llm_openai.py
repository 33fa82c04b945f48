"""OpenAI chat and text completions over a token-level LLM backend (CTranslate2, transformers): the fallback
engines' OpenAI layer. vLLM has its own (backends/vllm_backend.py); this one serves what a token-level engine can
honour and refuses the rest with a 400 that names the field, never a 200 that ignores what was asked.

Honoured: messages (text), prompt (text or token ids), max_tokens / max_completion_tokens, temperature, top_p,
stop, n, stream (with `stream_options.include_usage` and `continuous_usage_stats`), seed (best effort, as OpenAI documents it). Fields that do
not change the output (user, metadata, ...) are accepted. Tools, response formats other than text, logprobs,
penalties, logit_bias, echo, suffix and engine-specific extensions are refused.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from deployments.backends.llm_base import PROMPT_FIELD, SamplingParams, unhonoured_fields
from deployments.common import Refusal
from deployments.llm_text import IncrementalDecoder, finish_reason, render_prompt, usage

Generate = Callable[[list[int], SamplingParams], Awaitable[list[int]]]
Stream = Callable[[list[int], SamplingParams], AsyncIterator[list[int]]]

SAMPLING = {"max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed", "n"}
CHAT_FIELDS = SAMPLING | {"messages"}
COMPLETION_FIELDS = SAMPLING | {"prompt"}


class RequestRefused(ValueError):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def error(message: str, param: str | None = None, status: int = 400) -> Refusal:
    """A refusal with its HTTP status in `code`, as vLLM's serving layer gives its errors."""
    return Refusal(status, message, param)


@dataclass
class TokenLevelOpenAI:
    engine: str  # the backend's name, for messages
    tokenizer: Any
    context_length: int
    generate: Generate
    stream: Stream

    # ------------------------------------------------------------------ entry points (LLM deployment)

    async def openai(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            prompts, params, stop, n = self._prepare(kind, body)
        except RequestRefused as exc:
            return error(str(exc), exc.param)
        jobs = [self._whole(prompt, params, stop) for prompt in prompts for _ in range(n)]
        results = await asyncio.gather(*jobs)
        choices = []
        for index, (text, reason, _) in enumerate(results):
            if kind == "chat":
                choices.append({"index": index, "message": {"role": "assistant", "content": text},
                                "logprobs": None, "finish_reason": reason})
            else:
                choices.append({"index": index, "text": text, "logprobs": None, "finish_reason": reason})
        generated = sum(tokens for _, _, tokens in results)
        return {**self._head(kind, body), "choices": choices, "usage": usage(sum(map(len, prompts)), generated)}

    async def openai_stream(self, kind: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Chunks in the OpenAI shape; the choices one after another (index = prompt × n + choice)."""
        try:
            prompts, params, stop, n = self._prepare(kind, body)
        except RequestRefused as exc:
            yield error(str(exc), exc.param)
            return
        head = self._head(kind, body, chunk=True)
        options = body.get("stream_options") or {}
        continuous = bool(options.get("include_usage") and options.get("continuous_usage_stats"))
        prompt_tokens, generated = sum(map(len, prompts)), 0

        def chunk(index: int, delta: Any, reason: str | None = None) -> dict[str, Any]:
            """One choice's chunk; with continuous usage stats, the usage so far on it (as vLLM does)."""
            out = {**head, "choices": [_delta(kind, index, delta, reason)]}
            return {**out, "usage": usage(prompt_tokens, generated)} if continuous else out

        for index, prompt in enumerate(p for p in prompts for _ in range(n)):
            if kind == "chat":
                yield chunk(index, {"role": "assistant", "content": ""})
            decoder = IncrementalDecoder(self.tokenizer, stop)
            tokens = 0
            generation = self.stream(prompt, params)
            try:
                async for new_ids in generation:
                    tokens += len(new_ids)
                    generated += len(new_ids)
                    text = decoder.push(new_ids)
                    if text:
                        yield chunk(index, {"content": text} if kind == "chat" else text)
                    if decoder.stopped:
                        break
            finally:  # a stop string, or the client gone: the engine stops this sequence now
                await generation.aclose()
            tail = decoder.finish()
            if tail:
                yield chunk(index, {"content": tail} if kind == "chat" else tail)
            reason = finish_reason(decoder.stopped, tokens, params.max_tokens)
            yield chunk(index, {} if kind == "chat" else "", reason)
        if options.get("include_usage"):
            yield {**head, "choices": [], "usage": usage(prompt_tokens, generated)}

    # ------------------------------------------------------------------ pre-process

    def _prepare(self, kind: str, body: dict[str, Any]) -> tuple[list[list[int]], SamplingParams, list[str], int]:
        self._refuse_unsupported(body, CHAT_FIELDS if kind == "chat" else COMPLETION_FIELDS)
        prompts = [self._chat_prompt(body["messages"])] if kind == "chat" else self._completion_prompts(body)
        n = int(body.get("n") or 1)
        temperature = float(body["temperature"]) if body.get("temperature") is not None else 1.0
        if n > 1 and temperature <= 0:
            raise RequestRefused(f"n must be 1 when using greedy sampling, got {n}", "n")
        longest = max(map(len, prompts))
        room = self.context_length - longest
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or room
        if longest + max_tokens > self.context_length:
            raise RequestRefused(
                f"This model's maximum context length is {self.context_length} tokens. However, you requested "
                f"{max_tokens} output tokens and your prompt contains {longest} input tokens, for a total of "
                f"{longest + max_tokens} tokens.", PROMPT_FIELD[kind])
        params = SamplingParams(max_tokens=int(max_tokens), temperature=temperature,
                                top_p=float(body["top_p"]) if body.get("top_p") is not None else 1.0,
                                seed=body.get("seed"))
        stop = body.get("stop") or []
        return prompts, params, [stop] if isinstance(stop, str) else list(stop), n

    def _refuse_unsupported(self, body: dict[str, Any], honoured: set[str]) -> None:
        ignored = unhonoured_fields(body, honoured)
        if ignored:
            raise RequestRefused(f"`{ignored[0]}` is not supported by the {self.engine} engine serving this model "
                                 "right now (it needs the vLLM engine); leave it out or retry later", ignored[0])

    def _chat_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        plain = []
        for index, message in enumerate(messages):
            role = message.get("role")
            if role == "tool" or message.get("tool_calls") or message.get("function_call"):
                raise RequestRefused(f"messages[{index}]: tool turns need an engine with tool calling "
                                     f"(vLLM); the {self.engine} engine serving this model right now has none",
                                     f"messages[{index}]")
            plain.append({"role": "system" if role == "developer" else role,
                          "content": _text(message.get("content"), f"messages[{index}].content")})
        return render_prompt(self.tokenizer, plain)

    def _completion_prompts(self, body: dict[str, Any]) -> list[list[int]]:
        prompt = body.get("prompt")
        items = prompt if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) else [prompt]
        prompts = []
        vocabulary = len(self.tokenizer)
        for index, item in enumerate(items):
            if isinstance(item, str):
                prompts.append(list(self.tokenizer(item)["input_ids"]))
            elif isinstance(item, list) and item and all(isinstance(t, int) for t in item):
                if any(not 0 <= t < vocabulary for t in item):
                    raise RequestRefused(f"prompt[{index}]: token ids must be in [0, {vocabulary})", "prompt")
                prompts.append(list(item))
            else:
                raise RequestRefused("prompt must be a string, a list of strings, or token ids", "prompt")
        if not prompts or any(not p for p in prompts):
            raise RequestRefused("prompt must not be empty", "prompt")
        return prompts

    # ------------------------------------------------------------------ core + post-process

    async def _whole(self, prompt: list[int], params: SamplingParams, stop: list[str]) -> tuple[str, str, int]:
        ids = await self.generate(prompt, params)
        decoder = IncrementalDecoder(self.tokenizer, stop)
        decoder.push(ids)
        return decoder.text, finish_reason(decoder.stopped, len(ids), params.max_tokens), len(ids)

    @staticmethod
    def _head(kind: str, body: dict[str, Any], chunk: bool = False) -> dict[str, Any]:
        prefix, obj = ("chatcmpl", "chat.completion") if kind == "chat" else ("cmpl", "text_completion")
        if chunk and kind == "chat":
            obj += ".chunk"
        return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": obj, "created": int(time.time()),
                "model": body.get("model")}


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise RequestRefused(f"{where}: only text content is supported by this model", where)


def _delta(kind: str, index: int, delta: Any, reason: str | None = None) -> dict[str, Any]:
    if kind == "chat":
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
    return {"index": index, "text": delta, "logprobs": None, "finish_reason": reason}


