"""Plain transformers (PyTorch) causal LM: any device; the last resort of a load chain."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from deployments.backends.llm_base import SamplingParams, iterate_in_thread, no_adapters
from deployments.common import DeviceInfo
from deployments.spec import BackendSpec


class TransformersLLM:
    def __init__(self, spec: BackendSpec, device: DeviceInfo):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        options = dict(spec.options)
        self.torch = torch
        self.device = device.torch_device
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model)
        self.model = AutoModelForCausalLM.from_pretrained(spec.model, dtype=getattr(torch, device.dtype))
        self.model.to(self.device).eval()
        self.context_length = int(options.pop("context_length", self.model.config.max_position_embeddings))
        self.eos_token_id = self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id
        self._lock = threading.Lock()  # seeding is process-wide in torch: one generation at a time

    def _generate_kwargs(self, params: SamplingParams) -> dict:
        kwargs = {"max_new_tokens": params.max_tokens, "eos_token_id": self.eos_token_id,
                  "pad_token_id": self.eos_token_id}
        if params.greedy:
            return {**kwargs, "do_sample": False}
        return {**kwargs, "do_sample": True, "temperature": params.temperature, "top_p": params.top_p}

    def _run(self, prompt: list[int], params: SamplingParams, streamer=None, stop=None) -> list[int]:
        from transformers import StoppingCriteria, StoppingCriteriaList

        class Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return bool(stop is not None and stop.is_set())

        input_ids = self.torch.tensor([prompt], device=self.device)
        with self._lock, self.torch.inference_mode():
            if params.seed is not None:
                self.torch.manual_seed(params.seed)
            output = self.model.generate(
                input_ids, attention_mask=self.torch.ones_like(input_ids), streamer=streamer,
                stopping_criteria=StoppingCriteriaList([Stop()]), **self._generate_kwargs(params),
            )
        new = output[0, len(prompt):].tolist()
        return [t for t in new if t != self.eos_token_id]


    async def generate(self, prompts: Sequence[list[int]], params: Sequence[SamplingParams],
                       adapters: Sequence[Any] | None = None) -> list[list[int]]:
        no_adapters(adapters)
        return [await asyncio.to_thread(self._run, p, sp) for p, sp in zip(prompts, params, strict=True)]

    def stream(self, prompt: list[int], params: SamplingParams, adapter: Any = None) -> AsyncIterator[list[int]]:
        no_adapters([adapter])
        from queue import Queue

        from transformers.generation.streamers import BaseStreamer

        def produce(stop: threading.Event) -> Iterator[list[int]]:
            tokens: Queue = Queue()

            class IdStreamer(BaseStreamer):
                first = True

                def put(self, value):
                    if self.first:  # the prompt comes through once first
                        self.first = False
                        return
                    tokens.put(value.reshape(-1).tolist())

                def end(self):
                    tokens.put(None)

            failure: list[BaseException] = []

            def run():
                try:
                    self._run(prompt, params, IdStreamer(), stop)
                except BaseException as exc:
                    failure.append(exc)
                    tokens.put(None)

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            while (ids := tokens.get()) is not None:
                ids = [t for t in ids if t != self.eos_token_id]
                if ids:
                    yield ids
            thread.join()
            if failure:
                raise failure[0]

        return iterate_in_thread(produce)
