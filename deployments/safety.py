"""The Safety deployment: per-category scores for texts, batched across requests.

Categories: toxicity and prompt_injection (model backends), self_harm (phrase rules) and pii (pattern rules,
with the spans found and a redacted copy of the text). Scores only: what is blocked is the ingress's policy
(thresholds per role), so one deployment serves every policy."""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from deployments.backends.registry import SAFETY_BACKENDS
from deployments.backends.safety_backends import SafetyBackend
from deployments.base import ModelReplica, counted
from deployments.safety_rules import find_pii, redact, self_harm_score


@serve.deployment
class Safety(ModelReplica):
    role = "safety"
    factories = SAFETY_BACKENDS
    backend: SafetyBackend

    @counted
    async def check(self, texts: list[str], injection: bool = True) -> list[dict[str, Any]]:
        """One report per text: {"scores": {category: 0..1}, "pii": [{kind, start, end}], "redacted": str}."""
        return list(await asyncio.gather(*(self._batch((text, injection)) for text in texts)))

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def _batch(self, items: list[tuple[str, bool]]) -> list[dict[str, Any]]:
        self._inject_faults()
        texts = [text for text, _ in items]
        model_scores = self.backend.scores(texts, injection=[flag for _, flag in items])
        reports = []
        for (text, injection), scores in zip(items, model_scores, strict=True):
            spans = find_pii(text)
            reports.append({
                "scores": {
                    "toxicity": scores["toxicity"],
                    "prompt_injection": scores["prompt_injection"] if injection else 0.0,
                    "self_harm": self_harm_score(text),
                    "pii": 1.0 if spans else 0.0,
                },
                "pii": [{"kind": s.kind, "start": s.start, "end": s.end} for s in spans],
                "redacted": redact(text, spans),
            })
        self.stats.record(len(items), 1)
        return reports
