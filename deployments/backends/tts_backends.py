"""Text-to-speech backends behind one interface: one sentence in, float32 mono samples out.

- `hibari` (cpu default): the hibari-tts package's bundled voice (ONNX, ~100× real time on a core). Other
  hibari voices download on first use, so only voices already on disk are offered; asking for another is
  refused, never fetched.
- `transformers` (gpu profile): a transformers text-to-waveform model (VITS / MMS-TTS), one voice.
"""

from __future__ import annotations

import re
from typing import Protocol

import numpy as np

from deployments.common import DeviceInfo
from deployments.spec import BackendSpec

SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|\n\s*\n|\n")


class UnknownVoice(ValueError):
    pass


class TTSBackend(Protocol):
    sample_rate: int
    voices: list[str]
    default_voice: str

    def split(self, text: str) -> list[str]:
        """Pre-process: sentences, each synthesised on its own."""

    def synthesize(self, sentence: str, voice: str, speed: float) -> np.ndarray:
        """Core: float32 samples in [-1, 1] at `sample_rate`."""


class HibariTTS:
    def __init__(self, spec: BackendSpec, device: DeviceInfo):
        import hibari
        from hibari.voices import DEFAULT, VOICES, voice_path

        options = dict(spec.options)
        self._hibari = hibari
        self.sample_rate = int(hibari.SAMPLE_RATE)
        self.threads = int(options.get("threads", 1))
        self.voices = [name for name in VOICES if voice_path_or_none(voice_path, name)]
        self.default_voice = options.get("default_voice", DEFAULT)
        if self.default_voice not in self.voices:
            raise UnknownVoice(f"hibari voice {self.default_voice!r} is not on disk (available: {self.voices})")
        self._engines: dict[str, object] = {}
        self._engine(self.default_voice)("Ready.")  # load the model and the G2P now, not on the first request

    def _engine(self, voice: str):
        if voice not in self.voices:
            raise UnknownVoice(f"voice {voice!r} is not available; available: {', '.join(self.voices)}")
        if voice not in self._engines:
            self._engines[voice] = self._hibari.Hibari(voice=voice, threads=self.threads)
        return self._engines[voice]

    def split(self, text: str) -> list[str]:
        return self._hibari.Hibari.split_sentences(text)

    def synthesize(self, sentence: str, voice: str, speed: float) -> np.ndarray:
        return np.asarray(self._engine(voice)(sentence, speed=speed, seed=0), dtype=np.float32)


def voice_path_or_none(voice_path, name: str) -> str | None:
    try:
        return voice_path(name, download_missing=False)
    except Exception:  # not bundled and not cached: unavailable offline
        return None


class TransformersTTS:
    def __init__(self, spec: BackendSpec, device: DeviceInfo):
        import torch
        from transformers import AutoModelForTextToWaveform, AutoTokenizer

        self.torch = torch
        self.device = device.torch_device
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model)
        self.model = AutoModelForTextToWaveform.from_pretrained(spec.model).to(self.device).eval()
        self.sample_rate = int(self.model.config.sampling_rate)
        self.voices = ["default"]
        self.default_voice = "default"

    def split(self, text: str) -> list[str]:
        return [s.strip() for s in SENTENCE.split(text) if s and s.strip()]

    def synthesize(self, sentence: str, voice: str, speed: float) -> np.ndarray:
        if voice not in self.voices:
            raise UnknownVoice(f"voice {voice!r} is not available; available: default")
        inputs = self.tokenizer(sentence, return_tensors="pt").to(self.device)
        self.model.speaking_rate = speed
        with self.torch.inference_mode():
            self.torch.manual_seed(0)
            waveform = self.model(**inputs).waveform[0]
        return waveform.float().cpu().numpy()
