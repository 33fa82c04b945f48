"""CTranslate2 `Generator`: int8 on CPU (or int8_float16 on CUDA), batched generation and batched streaming.

Streams are batched too: concurrent stream requests with the same sampling settings are gathered for a few
milliseconds and decoded in one `generate_batch`, whose per-step callback hands each sequence its tokens (and
stops a sequence whose client went away). Without this, CTranslate2 decodes one stream at a time and the
eighth of eight concurrent streams waits for the other seven to finish before its first token.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from deployments.backends.llm_base import SamplingParams, no_adapters
from deployments.common import DeviceInfo
from deployments.spec import BackendSpec

_END = object()


@dataclass
class _StreamRequest:
    tokens: list[str]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue = field(default_factory=asyncio.Queue)
    stop: threading.Event = field(default_factory=threading.Event)

    def put(self, item: Any) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class CTranslate2LLM:
    def __init__(self, spec: BackendSpec, device: DeviceInfo):
        import ctranslate2
        from transformers import AutoTokenizer

        options = dict(spec.options)
        cuda = device.kind == "cuda"
        # On CPU a small model decodes fastest with one thread per sequence batch (measured for SmolLM2-135M:
        # ~80 tok/s with 1 intra thread vs ~31 with 2, OpenMP barriers dominate); parallelism comes from
        # inter_threads workers decoding different batches.
        self.inter_threads = int(options.pop("inter_threads", 1))
        self.generator = ctranslate2.Generator(
            spec.model,
            device="cuda" if cuda else "cpu",
            compute_type=options.pop("compute_type", "int8_float16" if cuda else "int8"),
            inter_threads=self.inter_threads,
            intra_threads=int(options.pop("intra_threads", 0)),  # 0: CTranslate2's default
        )
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model)
        self.context_length = int(options.pop("context_length", self.tokenizer.model_max_length))
        # CTranslate2 stops on this token; the SmolLM2 GGUF's own tokenizer names the wrong one (fixed in prep).
        self.end_token = options.pop("end_token", self.tokenizer.eos_token)
        self.stream_batch_size = int(options.pop("stream_batch_size", 16))
        self.stream_batch_wait_s = float(options.pop("stream_batch_wait_s", 0.01))
        self._pending: queue.Queue[_StreamRequest] = queue.Queue()
        self._workers: list[threading.Thread] = []
        self._workers_lock = threading.Lock()

    @staticmethod
    def _sampling(params: SamplingParams) -> dict:
        """CTranslate2 sampling arguments. `seed` is not honoured: CTranslate2 4.x seeds each worker thread's
        generator once (`set_random_seed` does not reset it; measured: three seeded runs, three answers), so
        seeded requests are as random as unseeded ones on this backend. OpenAI documents `seed` as best effort."""
        if params.greedy:
            return {"sampling_topk": 1, "sampling_temperature": 1.0}
        return {
            "sampling_topk": 0 if params.top_p < 1.0 else 50,
            "sampling_topp": params.top_p,
            "sampling_temperature": params.temperature,
        }

    def _tokens(self, ids: list[int]) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(ids)

    # ------------------------------------------------------------------ whole answers

    def _generate_group(self, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
        results = self.generator.generate_batch(
            [self._tokens(p) for p in prompts],
            max_length=params.max_tokens,
            include_prompt_in_result=False,
            end_token=self.end_token,
            **self._sampling(params),
        )
        return [list(r.sequences_ids[0]) for r in results]


    async def generate(self, prompts: Sequence[list[int]], params: Sequence[SamplingParams],
                       adapters: Sequence[Any] | None = None) -> list[list[int]]:
        no_adapters(adapters)
        outputs: list[list[int] | None] = [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: params[i].group_key())
        for _, members in groupby(order, key=lambda i: params[i].group_key()):
            indices = list(members)
            generated = await asyncio.to_thread(
                self._generate_group, [prompts[i] for i in indices], params[indices[0]]
            )
            for index, ids in zip(indices, generated, strict=True):
                outputs[index] = ids
        return outputs  # type: ignore[return-value]

    # ------------------------------------------------------------------ streams

    async def stream(self, prompt: list[int], params: SamplingParams, adapter: Any = None) -> AsyncIterator[list[int]]:
        no_adapters([adapter])
        self._ensure_workers()
        request = _StreamRequest(self._tokens(prompt), params, asyncio.get_running_loop())
        self._pending.put(request)
        try:
            while True:
                item = await request.out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield [item]
        finally:
            request.stop.set()  # the step callback ends this sequence at its next token

    def _ensure_workers(self) -> None:
        with self._workers_lock:
            while len(self._workers) < self.inter_threads:
                worker = threading.Thread(target=self._work, name="ct2-stream-batcher", daemon=True)
                worker.start()
                self._workers.append(worker)

    def _next_batch(self) -> list[_StreamRequest]:
        """Block for one request, then gather same-settings requests for up to `stream_batch_wait_s`."""
        first = self._pending.get()
        batch, others = [first], []
        deadline = time.monotonic() + self.stream_batch_wait_s
        while len(batch) < self.stream_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                request = self._pending.get(timeout=remaining)
            except queue.Empty:
                break
            (batch if request.params.group_key() == first.params.group_key() else others).append(request)
        for request in others:  # different settings: next round
            self._pending.put(request)
        return [r for r in batch if not r.stop.is_set()]

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch:
                self._decode(batch)

    def _decode(self, batch: list[_StreamRequest]) -> None:
        def on_step(step: Any) -> bool:
            request = batch[step.batch_id]
            if request.stop.is_set():
                return True  # stop decoding this sequence: nobody is listening
            if not (step.is_last and step.token == self.end_token):
                request.put(step.token_id)
            return False

        try:
            self.generator.generate_batch(
                [r.tokens for r in batch],
                max_length=batch[0].params.max_tokens,
                include_prompt_in_result=False,
                end_token=self.end_token,
                callback=on_step,
                **self._sampling(batch[0].params),
            )
        except Exception as exc:  # handed to every stream of the batch
            for request in batch:
                request.put(exc)
        for request in batch:
            request.put(_END)
