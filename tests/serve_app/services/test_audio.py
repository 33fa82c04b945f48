"""Speech encoding in OpenAI's formats, whole and streamed (PyAV's own decoders read the results back)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from serve_app.services.audio import PCM_RATE, STREAMING_DATA_SIZE, AudioEncoder, encode, wav_header

RATE = 16_000  # the gpu profile's MMS voice; the cpu profile's is 24 kHz
TONE = (0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * RATE) / RATE)).astype(np.float32)


def decoded(data: bytes) -> tuple[np.ndarray, int]:
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = [f.to_ndarray().reshape(-1).astype(np.float32) for f in container.decode(stream)]
        return (np.concatenate(frames) if frames else np.zeros(0, np.float32)), stream.rate


def test_pcm_is_24_khz_whatever_the_model_speaks():
    """Raw PCM has no header to carry a rate, and OpenAI's clients play it at 24 kHz."""
    for rate in (RATE, 22_050, PCM_RATE):
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * rate) / rate)).astype(np.float32)
        pcm = np.frombuffer(encode(tone, rate, "pcm"), dtype="<i2")
        assert abs(len(pcm) - 2 * PCM_RATE) <= 32, rate
        crossings = np.count_nonzero(np.diff(np.signbit(pcm[100:-100])))  # the tone's pitch survives
        assert abs(crossings / ((len(pcm) - 200) / PCM_RATE) / 2 - 440) < 5, rate


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav"])
def test_streamed_pieces_make_the_same_file_as_encoding_it_whole(fmt):
    whole, whole_rate = decoded(encode(TONE, RATE, fmt))
    encoder = AudioEncoder(fmt, RATE)
    pieces = [encoder.add(part) for part in np.array_split(TONE, 5)] + [encoder.finish()]
    streamed, streamed_rate = decoded(b"".join(pieces))
    assert whole_rate == streamed_rate == (48_000 if fmt == "opus" else RATE)
    assert abs(len(streamed) / streamed_rate - 2.0) < 0.15 and abs(len(whole) / whole_rate - 2.0) < 0.15
    assert sum(1 for piece in pieces[:-1] if piece) >= 1  # audio left before the end (Ogg pages hold ~1 s)


def test_flac_whole_states_its_length():
    """Readers such as libsndfile take a FLAC's length from its header (STREAMINFO's 36-bit sample count, which
    FFmpeg fills in only on a file it can seek back into): a whole file has it."""
    flac = encode(TONE, RATE, "flac")
    assert flac[:4] == b"fLaC" and int.from_bytes(flac[18:26], "big") & ((1 << 36) - 1) == len(TONE)


def test_an_abandoned_stream_leaves_what_it_sent_playable():
    """A client gone mid-stream: the encoder is let go (twice is harmless), and the pieces sent until then decode."""
    encoder = AudioEncoder("aac", RATE)
    sent = encoder.add(TONE[:RATE]) + encoder.add(TONE[RATE:])
    encoder.close()
    encoder.close()
    samples, rate = decoded(sent)
    assert rate == RATE and 1.0 < len(samples) / rate <= 2.0


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_no_audio_at_all_is_an_empty_file_not_an_error(fmt):
    """A text of punctuation alone speaks nothing; found by the API fuzzer as a 500. WAV and PCM can be empty,
    a compressed file with no frame is one no decoder opens."""
    for rate in (RATE, PCM_RATE):
        data = encode(np.zeros(0, dtype=np.float32), rate, fmt)
        if fmt in ("pcm", "wav"):
            assert len(data) == (44 if fmt == "wav" else 0)
        else:
            samples, decoded_rate = decoded(data)  # a file any decoder opens: a moment of silence
            assert len(samples) / decoded_rate < 0.2 and np.abs(samples).max(initial=0) < 1e-3
        streamed = AudioEncoder(fmt, rate)
        assert streamed.add(np.zeros(0, dtype=np.float32)) == b""
        tail = streamed.finish()
        if fmt in ("pcm", "wav"):
            assert tail == (b"" if fmt == "pcm" else wav_header(rate, STREAMING_DATA_SIZE))  # a header alone
        else:  # streamed, the same moment of silence
            samples, decoded_rate = decoded(tail)
            assert len(samples) / decoded_rate < 0.2 and np.abs(samples).max(initial=0) < 1e-3
