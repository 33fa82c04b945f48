"""The TTS deployment: text in, float32 mono samples out, sentence by sentence.

Long text is split into sentences; every sentence joins the replica-wide `@serve.batch` queue, so sentences of
concurrent requests are synthesised together, and each request gets its sentences back in order. `stream`
yields sentence audio as soon as it is ready (for long text)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from ray import serve

from deployments.backends.registry import TTS_BACKENDS
from deployments.backends.tts_backends import TTSBackend, UnknownVoice
from deployments.base import ModelReplica


@serve.deployment
class TTS(ModelReplica):
    role = "tts"
    factories = TTS_BACKENDS
    backend: TTSBackend

    def _check(self, voice: str | None) -> str | dict[str, Any]:
        voice = voice or self.backend.default_voice
        if voice not in self.backend.voices:
            return {"error": {"code": "unknown_voice",
                              "message": f"voice {voice!r} is not available; available: {', '.join(self.backend.voices)}"}}
        return voice

    async def speak(self, text: str, voice: str | None = None, speed: float = 1.0) -> dict[str, Any]:
        """Whole text → {"audio": float32 array, "sample_rate", "sentences"}, or {"error"}."""
        checked = self._check(voice)
        if isinstance(checked, dict):
            return checked
        sentences = self.backend.split(text)
        parts = await asyncio.gather(*(self._batch((s, checked, speed)) for s in sentences))
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return {"audio": audio, "sample_rate": self.backend.sample_rate, "sentences": len(sentences)}

    async def speak_stream(self, text: str, voice: str | None = None, speed: float = 1.0) -> AsyncIterator[dict]:
        """{"sample_rate"} first, then {"audio"} per sentence in order; or one {"error"}."""
        checked = self._check(voice)
        if isinstance(checked, dict):
            yield checked
            return
        yield {"sample_rate": self.backend.sample_rate}
        sentences = self.backend.split(text)
        # Queue every sentence at once (they batch together) and hand them out in order as they finish.
        pending = [asyncio.ensure_future(self._batch((s, checked, speed))) for s in sentences]
        try:
            for future in pending:
                yield {"audio": await future}
        finally:
            for future in pending:
                future.cancel()

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _batch(self, items: list[tuple[str, str, float]]) -> list[np.ndarray]:
        self._inject_faults()
        outputs = []
        for sentence, voice, speed in items:
            try:
                outputs.append(self.backend.synthesize(sentence, voice, speed))
            except UnknownVoice:
                outputs.append(np.zeros(0, np.float32))
        self.stats.record(len(items), len(items))
        return outputs

    def _details(self) -> dict[str, Any]:
        return {"voices": self.backend.voices, "default_voice": self.backend.default_voice,
                "sample_rate": self.backend.sample_rate}
