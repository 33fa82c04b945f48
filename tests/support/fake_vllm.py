"""A stand-in for the parts of vLLM's API the vLLM backend uses (`AsyncLLMEngine`, `AsyncEngineArgs`,
`SamplingParams`), so the adapter's own logic runs without a GPU or the vllm package.

The engine "generates" by echoing the prompt's tokens back in order, cumulatively, like vLLM's RequestOutput.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

ENGINES: list[FakeEngine] = []


@dataclass
class AsyncEngineArgs:
    model: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __init__(self, model: str, **kwargs: Any):
        self.model = model
        self.extra = kwargs


@dataclass
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


@dataclass
class CompletionOutput:
    token_ids: list[int]


@dataclass
class RequestOutput:
    request_id: str
    outputs: list[CompletionOutput]
    finished: bool


class FakeEngine:
    def __init__(self, args: AsyncEngineArgs):
        self.args = args
        self.aborted: list[str] = []
        self.requests: list[tuple[dict, SamplingParams]] = []
        self.lora_requests: list[LoRARequest | None] = []
        ENGINES.append(self)

    async def generate(self, prompt: dict, params: SamplingParams, request_id: str, lora_request=None):
        self.requests.append((prompt, params))
        self.lora_requests.append(lora_request)
        ids = prompt["prompt_token_ids"]
        count = min(params.max_tokens, len(ids))
        for n in range(1, count + 1):
            await asyncio.sleep(0)
            yield RequestOutput(request_id, [CompletionOutput(list(ids[:n]))], finished=n == count)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)


class AsyncLLMEngine:
    @staticmethod
    def from_engine_args(args: AsyncEngineArgs) -> FakeEngine:
        return FakeEngine(args)
