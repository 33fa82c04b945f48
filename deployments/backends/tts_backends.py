"""Text-to-speech backends behind one interface: one sentence in, float32 mono samples out.

- `hibari` (cpu default): the hibari-tts package's bundled voice (ONNX, ~100× real time on a core). Other
  hibari voices download on first use, so only voices already on disk are offered; asking for another is
  refused, never fetched.
- `transformers` (gpu profile): a transformers text-to-waveform model (VITS / MMS-TTS), one voice.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

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
        """Core: float32 samples in [-1, 1] at `sample_rate`, at a speed within NATIVE_SPEEDS."""


NATIVE_SPEEDS = (0.5, 2.0)  # what the voices' own speed control does well; OpenAI's clients may ask 0.25 to 4


def native_speed(speed: float) -> float:
    return min(max(speed, NATIVE_SPEEDS[0]), NATIVE_SPEEDS[1])


def mono_frame(samples: np.ndarray, sample_rate: int) -> Any:
    """Float32 mono samples as one FFmpeg audio frame (PyAV), for its filters and encoders."""
    import av

    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1),
                                       format="flt", layout="mono")
    frame.sample_rate = sample_rate
    return frame


def time_stretch(samples: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Post-process: the audio `factor` times faster, its pitch kept (FFmpeg's atempo, through PyAV), for speeds
    beyond NATIVE_SPEEDS: the voice speaks at the nearest native speed, this does the rest."""
    import av

    graph = av.filter.Graph()
    source = graph.add_abuffer(format="flt", sample_rate=sample_rate, layout="mono")
    tempo = graph.add("atempo", f"{factor:.6f}")
    sink = graph.add("abuffersink")
    source.link_to(tempo)
    tempo.link_to(sink)
    graph.configure()
    graph.push(mono_frame(samples, sample_rate))
    graph.push(None)
    out = []
    while True:
        try:
            out.append(graph.pull().to_ndarray().reshape(-1))
        except (av.error.EOFError, av.error.BlockingIOError):
            break
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, np.float32)


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
