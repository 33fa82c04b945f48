"""Generation through the LLM deployment: OpenAI chat and text completions (/v1) passed to the engine's own
OpenAI layer, and plain chat for the product features (/v2, content tools); limits, and answers whole or
streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from serve_app.catalog import ModelCatalog
from serve_app.errors import EduserveError, ErrorCode
from serve_app.routing import ModelRouter
from serve_app.services.usage import Consumed, UsageMeter
from serve_app.settings import ChatSettings


class ChatService:
    def __init__(self, router: ModelRouter, catalog: ModelCatalog, settings: ChatSettings, meter: UsageMeter):
        self.router = router
        self.catalog = catalog
        self.settings = settings
        self.meter = meter

    def model_name(self, requested: str | None) -> str:
        return self.catalog.resolve("llm", requested).name

    def model_id(self, requested: str | None) -> str | None:
        """The LoRA adapter's multiplexed id when `requested` names one, else None (the base model)."""
        return self.catalog.resolve("llm", requested).multiplexed_id

    def payload(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float = 0.7,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
        history_token_budget: int | None = None,
        system_prompt: str | None = None,
    ) -> dict[str, Any]:
        """The LLM deployment's request. Without a system message, the service's own system prompt leads."""
        limit = self.settings.max_tokens_limit
        if max_tokens is not None and max_tokens > limit:
            raise EduserveError(ErrorCode.VALIDATION_ERROR, f"max_tokens: at most {limit}")
        for index, message in enumerate(messages):
            if len(message["content"]) > self.settings.max_message_chars:
                raise EduserveError(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"message {index} is too long: more than {self.settings.max_message_chars} characters",
                )
        if not any(m["role"] == "system" for m in messages):
            messages = [{"role": "system", "content": system_prompt or self.settings.system_prompt}, *messages]
        return {
            "messages": messages,
            "max_tokens": max_tokens or self.settings.default_max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stop": stop or [],
            "seed": seed,
            "history_token_budget": history_token_budget,
        }

    def openai_body(self, kind: str, body: dict[str, Any], texts: list[str], model: str,
                    token_limit: int | None) -> dict[str, Any]:
        """The engine's request for /v1: the served name the engine knows, the service's limits (on `texts`, the
        request's messages or prompts) and defaults (max_tokens; the tutor system prompt when a chat has none)."""
        limit = self.settings.max_tokens_limit
        if token_limit is not None and token_limit > limit:
            raise EduserveError(ErrorCode.BAD_REQUEST, f"max_tokens: at most {limit}", param="max_tokens")
        for index, text in enumerate(texts):
            if len(text) > self.settings.max_message_chars:
                what = f"message {index}" if kind == "chat" else f"prompt {index}"
                raise EduserveError(ErrorCode.PAYLOAD_TOO_LARGE,
                                    f"{what} is too long: more than {self.settings.max_message_chars} characters")
        body = {**body, "model": model}
        if token_limit is None:
            body["max_tokens"] = self.settings.default_max_tokens
        if kind == "chat" and not any(m["role"] in ("system", "developer") for m in body["messages"]):
            body["messages"] = [{"role": "system", "content": self.settings.system_prompt}, *body["messages"]]
        return body

    async def openai(self, kind: str, body: dict[str, Any], model_id: str | None = None) -> dict[str, Any]:
        """A whole chat or text completion from the engine, in the OpenAI shape."""
        await self.meter.admit()
        result = await self.router.call("openai", kind, body, multiplexed_model_id=model_id)
        self._record(body["model"], kind, result.get("usage"))
        return result

    async def openai_stream(self, kind: str, body: dict[str, Any],
                            model_id: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """The engine's chunks, checked before anything is sent (a refused request is a plain 4xx). The engine
        reports usage on every chunk: counted as far as the stream got, and passed on as the client asked."""
        await self.meter.admit()
        chunks = self.router.stream("openai_stream", kind, body, multiplexed_model_id=model_id)
        asked = body.get("stream_options") or {}
        return await self._checked(self._metered(chunks, body["model"], kind, asked))

    async def complete(self, payload: dict[str, Any], model_id: str | None = None) -> dict[str, Any]:
        await self.meter.admit()
        result = await self.router.call("chat", payload, multiplexed_model_id=model_id)
        self._record(model_id or self.model_name(None), "chat", result.get("usage"))
        return result

    async def stream(self, payload: dict[str, Any], model_id: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """The deployment's stream, checked before anything is sent: a rejected request (prompt too long)
        raises here, so the client gets a plain 4xx instead of an event stream that opens with an error."""
        await self.meter.admit()
        items = self.router.stream("chat_stream", payload, multiplexed_model_id=model_id)
        return await self._checked(self._metered(items, model_id or self.model_name(None), "chat"))

    def _record(self, model: str, kind: str, usage: dict[str, Any] | None) -> None:
        if usage:
            self.meter.record(model, kind, Consumed(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                                                    completion_tokens=int(usage.get("completion_tokens") or 0)))

    async def _metered(self, items: AsyncIterator[dict[str, Any]], model: str, kind: str,
                       asked: dict[str, Any] | None = None) -> AsyncIterator[dict[str, Any]]:
        """The stream, counted as it goes: the last usage seen is recorded however the stream ends (finished,
        failed, or the client gone). With `asked` (an OpenAI stream), usage the client did not ask for is
        dropped: per-chunk usage without `continuous_usage_stats`, the usage chunk without `include_usage`."""
        seen = None
        try:
            async for item in items:
                if isinstance(item.get("usage"), dict):
                    seen = item["usage"]
                    if asked is not None and item.get("choices") and not asked.get("continuous_usage_stats"):
                        item = {key: value for key, value in item.items() if key != "usage"}
                    elif asked is not None and not item.get("choices") and not asked.get("include_usage"):
                        continue
                yield item
        finally:
            self._record(model, kind, seen)
            await items.aclose()

    @staticmethod
    async def _checked(items: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """The first item is awaited here: a refusal (the router raises it) is a plain 4xx, not a stream."""
        first = await anext(items, None)
        if first is None:
            return items
        return _prepend(first, items)


async def _prepend(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:  # closing this closes the source at once (the engine stops; the usage is recorded)
        await rest.aclose()
