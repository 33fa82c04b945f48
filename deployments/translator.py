"""The Translator deployment: one CTranslate2 model per language pair, loaded on demand and evicted least
recently used (`@serve.multiplexed`); the pair is the multiplexed model id (e.g. `en-fr`)."""

from __future__ import annotations

from typing import Any

from ray import serve

from deployments.backends.registry import TRANSLATION_BACKENDS
from deployments.base import ModelReplica
from deployments.common import Refusal


@serve.deployment
class Translator(ModelReplica):
    role = "translator"
    factories = TRANSLATION_BACKENDS

    async def translate(self, texts: list[str]) -> dict[str, Any] | Refusal:
        """Each text is translated sentence by sentence (every sentence joins the replica-wide batch) and put
        back together: sentences joined by a space, paragraphs by a blank line."""
        backend, error = await self._select()
        if error:
            return error
        documents = [backend.split(text) for text in texts]
        sentences = [sentence for paragraphs in documents for paragraph in paragraphs for sentence in paragraph]
        results = iter(await self._submit([(backend, sentence) for sentence in sentences]))
        translated, token_counts = [], []
        for paragraphs in documents:
            parts = [[next(results) for _ in paragraph] for paragraph in paragraphs]
            translated.append("\n\n".join(" ".join(text for text, _ in part) for part in parts))
            token_counts.append(sum(tokens for part in parts for _, tokens in part))
        return {"texts": translated, "token_counts": token_counts}

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _batch(self, items: list[tuple[Any, str, float]]) -> list[tuple[str, int]]:
        return self._run_batch(items)

    def _forward(self, backend: Any, texts: list[str]) -> Any:
        return backend.translate(texts)
