"""The Translator deployment: one CTranslate2 model per language pair, loaded on demand and evicted least
recently used (`@serve.multiplexed`); the pair is the multiplexed model id (e.g. `en-fr`)."""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from deployments.backends.registry import TRANSLATION_BACKENDS
from deployments.base import ModelReplica


@serve.deployment
class Translator(ModelReplica):
    role = "translator"
    factories = TRANSLATION_BACKENDS

    async def translate(self, texts: list[str]) -> dict[str, Any]:
        backend, error = await self._select()
        if error:
            return error
        results = await asyncio.gather(*(self._batch((backend, text)) for text in texts))
        return {"texts": [text for text, _ in results], "token_counts": [tokens for _, tokens in results]}

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _batch(self, items: list[tuple[Any, str]]) -> list[tuple[str, int]]:
        return self._run_batch(items, lambda b, texts: b.count_tokens(texts), lambda b, texts: b.translate(texts))
