from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator

from fastapi import APIRouter, Response
from sse_starlette import EventSourceResponse

from serve_app.api.deps import CurrentPrincipal, State
from serve_app.errors import EduserveError, error_body
from serve_app.protocol.content import SpeechRequest
from serve_app.services.audio import CONTENT_TYPES, AudioEncoder, encode

router = APIRouter(tags=["openai"])
logger = logging.getLogger("ray.serve.eduserve.content")

SPEECH = {200: {"content": {**{t: {} for t in CONTENT_TYPES.values()}, "text/event-stream": {}}}}


@router.post("/v1/audio/speech", responses=SPEECH)
async def create_speech(body: SpeechRequest, principal: CurrentPrincipal, state: State):
    """OpenAI text to speech: audio in the requested format (default mp3, as OpenAI), whole; or with
    `stream_format: sse`, as server-sent events, sentence by sentence."""
    state.catalog.resolve("tts", body.model)
    if body.stream_format == "sse":
        sample_rate, sentences = await state.content.speech_stream(principal, body.input, body.voice, body.speed)
        return EventSourceResponse(_speech_events(AudioEncoder(body.response_format, sample_rate), sentences),
                                   ping=15)
    result = await state.content.speech(principal, body.input, body.voice, body.speed)
    # Encoding takes ~0.1 s per minute of audio: off the event loop.
    audio = await asyncio.to_thread(encode, result["audio"], result["sample_rate"], body.response_format)
    return Response(audio, media_type=CONTENT_TYPES[body.response_format])


async def _speech_events(encoder: AudioEncoder, sentences: AsyncGenerator) -> AsyncIterator[dict[str, str]]:
    """OpenAI's speech events: `speech.audio.delta` per piece of encoded audio, then `speech.audio.done`; a
    failure after the first event is an `error` event instead of the last one (the status line has gone)."""
    def delta(data: bytes) -> dict[str, str]:
        return {"data": json.dumps({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})}

    try:
        async for samples in sentences:
            data = await asyncio.to_thread(encoder.add, samples)
            if data:
                yield delta(data)
        data = await asyncio.to_thread(encoder.finish)
        if data:
            yield delta(data)
    except EduserveError as exc:
        logger.info("speech stream ended early: %s", exc.message)
        yield {"data": json.dumps({"type": "error", **error_body(exc.code, exc.message)})}
        return
    finally:
        encoder.close()
        await sentences.aclose()  # a client gone: the TTS replica stops, the audio so far is counted
    yield {"data": json.dumps({"type": "speech.audio.done"})}
