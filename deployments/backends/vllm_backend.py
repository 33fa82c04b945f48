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
from typing import Any

from deployments.backends.llm_base import AdaptersNotSupported, LoRAAdapter, SamplingParams
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
        self._lora_request = getattr(module, "LoRARequest", None)
        self._next_adapter_id = 0
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

    def load_adapter(self, name: str, adapter: LoRAAdapter) -> Any:
        """A LoRARequest for the engine (which needs `enable_lora: true` in the profile's options). vLLM loads the
        weights on the adapter's first request; Serve's multiplexing keeps replicas that have it preferred."""
        if self._lora_request is None:
            raise AdaptersNotSupported("this vLLM build has no LoRARequest")
        self._next_adapter_id += 1
        return self._lora_request(name, self._next_adapter_id, adapter.path)

    async def stream(self, prompt: list[int], params: SamplingParams, adapter: Any = None) -> AsyncIterator[list[int]]:
        request_id = uuid.uuid4().hex
        outputs = self.engine.generate({"prompt_token_ids": prompt}, self._params(params), request_id,
                                       lora_request=adapter)
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

    async def generate(self, prompts: Sequence[list[int]], params: Sequence[SamplingParams],
                       adapters: Sequence[Any] | None = None) -> list[list[int]]:
        async def one(prompt: list[int], sp: SamplingParams, adapter: Any) -> list[int]:
            ids: list[int] = []
            async for new in self.stream(prompt, sp, adapter):
                ids.extend(new)
            return ids

        adapters = adapters or [None] * len(prompts)
        # vLLM batches continuously across concurrent requests by itself.
        return list(await asyncio.gather(*(one(p, sp, a) for p, sp, a in zip(prompts, params, adapters, strict=True))))
