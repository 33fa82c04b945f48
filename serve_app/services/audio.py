"""Audio encoding for the TTS routes, in OpenAI's six formats: WAV and raw PCM (16-bit little-endian; PCM at
24 kHz, the rate OpenAI's clients assume, as it has no header to say otherwise) by hand; MP3, Opus (in Ogg), AAC
(ADTS) and FLAC through FFmpeg's encoders (PyAV). Float32 samples in [-1, 1] in, bytes out: whole (`encode`) or
as sentences arrive (`AudioEncoder`), for streamed answers."""

from __future__ import annotations

import contextlib
import io
import struct
from typing import Any

import numpy as np

from deployments.backends.tts_backends import mono_frame

CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac", "flac": "audio/flac",
                 "wav": "audio/wav", "pcm": "audio/pcm"}
PCM_RATE = 24_000
# format: (FFmpeg encoder, container, output rate (None: the model's), bit rate)
FFMPEG_FORMATS: dict[str, tuple[str, str, int | None, int | None]] = {
    "mp3": ("libmp3lame", "mp3", None, 64_000),
    "opus": ("libopus", "ogg", 48_000, 32_000),  # Opus codes 8, 12, 16, 24 or 48 kHz; 48 kHz is its native rate
    "aac": ("aac", "adts", None, 64_000),
    "flac": ("flac", "flac", None, None),
}
STREAMING_DATA_SIZE = 0xFFFFFFFF - 36


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def wav_header(sample_rate: int, data_bytes: int) -> bytes:
    """A 44-byte PCM WAV header. For a stream of unknown length pass STREAMING_DATA_SIZE: players read to the end."""
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data_bytes))


class _Sink(io.RawIOBase):
    """Where FFmpeg writes a stream: not seekable, so it writes each part once, in order, and never goes back."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _pcm16_bytes(frames: Any) -> bytes:
    """The resampler's 16-bit frames as little-endian bytes."""
    return b"".join(frame.to_ndarray().astype("<i2").tobytes() for frame in frames)


class AudioEncoder:
    """One audio stream in one format: `add(samples)` gives the bytes ready so far (possibly none: an encoder
    holds back what it has not framed yet), `finish()` the rest. Concatenated, they are one valid file. `whole`:
    everything comes from `finish()`, and a container that states its length (FLAC) states it."""

    def __init__(self, audio_format: str, sample_rate: int, whole: bool = False) -> None:
        if audio_format not in CONTENT_TYPES:
            raise ValueError(f"unsupported audio format {audio_format!r}")
        self.format, self.sample_rate = audio_format, sample_rate
        self._header = audio_format == "wav"
        self._added = False
        self._resampler: Any = None
        self._output: Any = None
        if audio_format == "pcm" and sample_rate != PCM_RATE:
            import av

            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=PCM_RATE)
        elif audio_format in FFMPEG_FORMATS:
            import av

            codec, container, rate, bit_rate = FFMPEG_FORMATS[audio_format]
            self._file: io.BytesIO | _Sink = io.BytesIO() if whole else _Sink()
            self._output = av.open(self._file, "w", format=container)
            self._stream = self._output.add_stream(codec, rate=rate or sample_rate, layout="mono")
            if bit_rate:
                self._stream.bit_rate = bit_rate

    def add(self, samples: np.ndarray) -> bytes:
        if not len(samples):  # FFmpeg has no empty frame (a text of punctuation alone speaks nothing)
            return b""
        self._added = True
        if self._output is not None:
            for packet in self._stream.encode(mono_frame(samples, self.sample_rate)):
                self._output.mux(packet)
            return self._file.take() if isinstance(self._file, _Sink) else b""
        if self._resampler is not None:
            return _pcm16_bytes(self._resampler.resample(mono_frame(samples, self.sample_rate)))
        data = pcm16(samples)
        if self._header:
            self._header = False
            return wav_header(self.sample_rate, STREAMING_DATA_SIZE) + data
        return data

    def finish(self) -> bytes:
        if self._output is not None:
            # A compressed file with no frame at all is one no decoder opens: no speech is 50 ms of silence.
            head = b"" if self._added else self.add(np.zeros(self.sample_rate // 20, dtype=np.float32))
            for packet in self._stream.encode(None):
                self._output.mux(packet)
            self._output.close()
            self._output = None
            return head + (self._file.take() if isinstance(self._file, _Sink) else self._file.getvalue())
        if self._resampler is not None:
            return _pcm16_bytes(self._resampler.resample(None))
        return wav_header(self.sample_rate, STREAMING_DATA_SIZE) if self._header else b""  # no audio at all

    def close(self) -> None:
        """Let go of the encoder without finishing (the stream was abandoned)."""
        if self._output is not None:
            with contextlib.suppress(Exception):  # an unfinished container may complain; nothing is written anyway
                self._output.close()
            self._output = None


def encode(samples: np.ndarray, sample_rate: int, audio_format: str) -> bytes:
    """A whole file. A WAV carries its exact length; the other formats are as a stream of them would be."""
    if audio_format == "wav":
        data = pcm16(samples)
        return wav_header(sample_rate, len(data)) + data
    encoder = AudioEncoder(audio_format, sample_rate, whole=True)
    return encoder.add(samples) + encoder.finish()
