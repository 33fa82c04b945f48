"""Chat generation through the LLM deployment: request building, limits, and answers whole or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from serve_app.catalog import ModelCatalog
from serve_app.errors import EduserveError, ErrorCode
from serve_app.routing import ModelRouter
from serve_app.settings import ChatSettings

MODEL_ERRORS = {"context_length_exceeded": ErrorCode.CONTEXT_LENGTH_EXCEEDED, "model_not_found": ErrorCode.MODEL_NOT_FOUND}


def model_error(result: dict[str, Any]) -> EduserveError:
    error = result["error"]
    return EduserveError(MODEL_ERRORS.get(error.get("code"), ErrorCode.BAD_REQUEST), error.get("message", "rejected"))


class ChatService:
    def __init__(self, router: ModelRouter, catalog: ModelCatalog, settings: ChatSettings):
        self.router = router
        self.catalog = catalog
        self.settings = settings

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

    async def complete(self, payload: dict[str, Any], model_id: str | None = None) -> dict[str, Any]:
        result = await self.router.call("chat", payload, multiplexed_model_id=model_id)
        if "error" in result:
            raise model_error(result)
        return result

    async def stream(self, payload: dict[str, Any], model_id: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """The deployment's stream, checked before anything is sent: a rejected request (prompt too long)
        raises here, so the client gets a plain 4xx instead of an event stream that opens with an error."""
        items = self.router.stream("chat_stream", payload, multiplexed_model_id=model_id)
        first = await anext(items)
        if "error" in first:
            await items.aclose()
            raise model_error(first)
        return _prepend(first, items)


async def _prepend(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for item in rest:
        yield item
