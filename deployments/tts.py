"""The TTS deployment: text in, float32 mono samples out, sentence by sentence.

Long text is split into sentences; every sentence joins the replica-wide `@serve.batch` queue, so sentences of
concurrent requests are synthesised together, and each request gets its sentences back in order. `stream`
yields sentence audio as soon as it is ready (for long text). A sentence the engine cannot synthesise fails its
own request (an `unprocessable_input` error), never the other requests of its batch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from ray import serve

from deployments.backends.registry import TTS_BACKENDS
from deployments.backends.tts_backends import TTSBackend, UnknownVoice, native_speed, time_stretch
from deployments.base import ModelReplica, counted
from deployments.common import Refusal

logger = logging.getLogger("ray.serve.eduserve.tts")


class SynthesisFailed(Exception):
    """The engine raised on one sentence (kept apart from the batch it came in)."""


def unprocessable(what: str) -> Refusal:
    return Refusal("unprocessable_input", f"the TTS engine could not synthesise {what}", "input")


@serve.deployment
class TTS(ModelReplica):
    role = "tts"
    factories = TTS_BACKENDS
    backend: TTSBackend

    def _check(self, voice: str | None) -> str | Refusal:
        voice = voice or self.backend.default_voice
        if voice not in self.backend.voices:
            available = ", ".join(self.backend.voices)
            return Refusal("unknown_voice", f"voice {voice!r} is not available; available: {available}", "voice")
        return voice

    @counted
    async def speak(self, text: str, voice: str | None = None, speed: float = 1.0) -> dict[str, Any] | Refusal:
        """Whole text → {"audio": float32 array, "sample_rate", "sentences"}, or a Refusal."""
        checked = self._check(voice)
        if isinstance(checked, Refusal):
            return checked
        sentences = self._split(text)
        if sentences is None:
            return unprocessable("this text")
        parts = await asyncio.gather(*(self._batch((s, checked, speed)) for s in sentences))
        failed = [n for n, part in enumerate(parts, 1) if isinstance(part, SynthesisFailed)]
        if failed:
            return unprocessable(f"sentence {failed[0]} of this text")
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return {"audio": audio, "sample_rate": self.backend.sample_rate, "sentences": len(sentences)}

    @counted
    async def speak_stream(self, text: str, voice: str | None = None, speed: float = 1.0) -> AsyncIterator[dict]:
        """{"sample_rate"} first, then {"audio"} per sentence in order; or one Refusal (first, or where a
        sentence failed)."""
        checked = self._check(voice)
        if isinstance(checked, Refusal):
            yield checked
            return
        sentences = self._split(text)
        if sentences is None:
            yield unprocessable("this text")
            return
        # Queue every sentence at once (they batch together) and hand them out in order as they finish.
        pending = [asyncio.ensure_future(self._batch((s, checked, speed))) for s in sentences]
        try:
            for n, future in enumerate(pending, 1):
                audio = await future
                if isinstance(audio, SynthesisFailed):  # before any audio: an error; later: the stream ends here
                    yield unprocessable(f"sentence {n} of this text")
                    return
                if n == 1:  # the header waits for the first sentence, so a text that fails at once is an error
                    yield {"sample_rate": self.backend.sample_rate}
                yield {"audio": audio}
            if not pending:
                yield {"sample_rate": self.backend.sample_rate}
        finally:
            for future in pending:
                future.cancel()

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _batch(self, items: list[tuple[str, str, float]]) -> list[np.ndarray]:
        self._inject_faults()
        outputs: list[np.ndarray | SynthesisFailed] = []
        for sentence, voice, speed in items:
            try:
                native = native_speed(speed)
                audio = self.backend.synthesize(sentence, voice, native)
                if native != speed and len(audio):
                    audio = time_stretch(audio, speed / native, self.backend.sample_rate)
                outputs.append(audio)
            except UnknownVoice:
                outputs.append(np.zeros(0, np.float32))
            except Exception as exc:  # noqa: BLE001 - this sentence's failure, not the batch's
                logger.warning("TTS failed on a sentence of %d chars: %s: %s", len(sentence), type(exc).__name__, exc)
                outputs.append(SynthesisFailed(type(exc).__name__))
        self.stats.record(len(items), len(items))
        return outputs

    def _split(self, text: str) -> list[str] | None:
        try:
            return self.backend.split(text)
        except Exception as exc:  # noqa: BLE001 - the text's failure
            logger.warning("TTS could not split a text of %d chars: %s: %s", len(text), type(exc).__name__, exc)
            return None

    def _details(self) -> dict[str, Any]:
        return {"voices": self.backend.voices, "default_voice": self.backend.default_voice,
                "sample_rate": self.backend.sample_rate}
