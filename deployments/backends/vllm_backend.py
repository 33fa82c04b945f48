"""vLLM `AsyncLLMEngine` (GPU, continuous batching). vLLM is the optional `gpu` extra: it is imported only when
a profile chooses this backend.

`options.engine_module` names the module that provides `AsyncLLMEngine`, `AsyncEngineArgs` and
`SamplingParams` (default `vllm`); tests point it at a double with the same interface.
"""

from __future__ import annotations

import asyncio
import importlib
import uuid
from collections.abc import AsyncIterator, Sequence

from deployments.backends.llm_base import SamplingParams
from deployments.common import DeviceInfo
from deployments.spec import BackendSpec


class VLLMBackend:
    def __init__(self, spec: BackendSpec, device: DeviceInfo):
        from transformers import AutoTokenizer

        options = dict(spec.options)
        module = importlib.import_module(options.pop("engine_module", "vllm"))
        self.context_length = int(options.get("max_model_len", 0)) or None
        args = module.AsyncEngineArgs(model=spec.model, **options)
        self.engine = module.AsyncLLMEngine.from_engine_args(args)
        self._sampling_params = module.SamplingParams
        self.tokenizer = AutoTokenizer.from_pretrained(options.get("tokenizer", spec.model))
        if self.context_length is None:
            self.context_length = int(self.tokenizer.model_max_length)

    def _params(self, params: SamplingParams):
        return self._sampling_params(
            max_tokens=params.max_tokens,
            temperature=max(params.temperature, 0.0),
            top_p=params.top_p,
            seed=params.seed,
        )

    async def stream(self, prompt: list[int], params: SamplingParams) -> AsyncIterator[list[int]]:
        request_id = uuid.uuid4().hex
        outputs = self.engine.generate({"prompt_token_ids": prompt}, self._params(params), request_id)
        seen = 0
        finished = False
        try:
            async for output in outputs:
                completion = output.outputs[0]
                ids = list(completion.token_ids)
                if len(ids) > seen:
                    yield ids[seen:]
                    seen = len(ids)
                finished = output.finished
        finally:
            if not finished:  # client gone or stop string hit: free the sequence's KV cache now
                await self.engine.abort(request_id)

    async def generate(self, prompts: Sequence[list[int]], params: Sequence[SamplingParams]) -> list[list[int]]:
        async def one(prompt: list[int], sp: SamplingParams) -> list[int]:
            ids: list[int] = []
            async for new in self.stream(prompt, sp):
                ids.extend(new)
            return ids

        # vLLM batches continuously across concurrent requests by itself.
        return list(await asyncio.gather(*(one(p, sp) for p, sp in zip(prompts, params, strict=True))))
