"""Audio encoding for the TTS routes: WAV (16-bit), raw PCM (16-bit little-endian), FLAC (soundfile) and MP3
(lameenc). Float32 samples in [-1, 1] in, bytes out."""

from __future__ import annotations

import io
import struct

import numpy as np

CONTENT_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac", "mp3": "audio/mpeg"}


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def wav_header(sample_rate: int, data_bytes: int) -> bytes:
    """A 44-byte PCM WAV header. For a stream of unknown length pass 0xFFFFFFFF - 36: players read to the end."""
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data_bytes))


STREAMING_DATA_SIZE = 0xFFFFFFFF - 36


def encode(samples: np.ndarray, sample_rate: int, audio_format: str) -> bytes:
    if audio_format == "pcm":
        return pcm16(samples)
    if audio_format == "wav":
        data = pcm16(samples)
        return wav_header(sample_rate, len(data)) + data
    if audio_format == "flac":
        import soundfile

        buffer = io.BytesIO()
        soundfile.write(buffer, samples, sample_rate, format="FLAC", subtype="PCM_16")
        return buffer.getvalue()
    if audio_format == "mp3":
        import lameenc

        encoder = lameenc.Encoder()
        encoder.set_bit_rate(64)
        encoder.set_in_sample_rate(sample_rate)
        encoder.set_channels(1)
        encoder.set_quality(5)
        return bytes(encoder.encode(pcm16(samples)) + encoder.flush())
    raise ValueError(f"unsupported audio format {audio_format!r}")
