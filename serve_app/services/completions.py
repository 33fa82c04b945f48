"""/v1 chat and text completions: the engine's own OpenAI layer (vLLM's) through the LLM's router, with the safety
pipeline on both sides: the caller's texts checked (and redacted) on the way in, each choice on the way out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from serve_app.catalog import ModelCatalog
from serve_app.protocol.chat import ChatCompletionRequest, CompletionRequest, GenerationRequest
from serve_app.security.principal import Principal
from serve_app.services.chat import ChatService
from serve_app.services.safety import SafetyService


@dataclass
class CompletionStream:
    """The checked chunks to send, and the engine's stream under them (closed when the client goes)."""

    chunks: AsyncIterator[dict[str, Any]]
    source: AsyncIterator[Any]


class CompletionService:
    def __init__(self, chat: ChatService, safety: SafetyService, catalog: ModelCatalog):
        self.chat, self.safety, self.catalog = chat, safety, catalog

    async def chat_completion(self, principal: Principal, request: ChatCompletionRequest
                              ) -> dict[str, Any] | CompletionStream:
        """The user messages pass the safety pipeline first (a block is a 400 naming the category)."""
        body = request.model_dump(exclude_unset=True, by_alias=True)
        checked = iter(await self.safety.check_inputs(principal,
                                                      [m.text() for m in request.messages if m.role == "user"]))
        body["messages"] = [{**message, "content": next(checked)} if message["role"] == "user" else message
                            for message in body["messages"]]
        return await self._generate(principal, "chat", request, body)

    async def completion(self, principal: Principal, request: CompletionRequest) -> dict[str, Any] | CompletionStream:
        """Text prompts pass the safety pipeline first; token-id prompts go as they are."""
        body = request.model_dump(exclude_unset=True)
        texts = request.texts()
        if texts:
            checked = iter(await self.safety.check_inputs(principal, texts))
            prompt = body["prompt"]
            body["prompt"] = next(checked) if isinstance(prompt, str) else [
                next(checked) if isinstance(item, str) else item for item in prompt]
        return await self._generate(principal, "completion", request, body)

    async def _generate(self, principal: Principal, kind: str, request: GenerationRequest,
                        body: dict[str, Any]) -> dict[str, Any] | CompletionStream:
        served = self.catalog.resolve("llm", request.model)
        body = self.chat.openai_body(kind, body, request.texts(), served.name, request.token_limit())
        rewrite = not request.constrained()  # a JSON answer is checked, never redacted into invalid JSON
        if not request.stream:
            answer = await self.chat.openai(kind, body, served.multiplexed_id)
            return await self.safety.check_choices(principal, kind, answer, rewrite)
        source = await self.chat.openai_stream(kind, body, served.multiplexed_id)
        prompts = len(request.prompts()) if isinstance(request, CompletionRequest) else 1
        guard = self.safety.choices_guard(principal, kind, prompts * request.n, rewrite)
        return CompletionStream(guard.stream(source), source)
