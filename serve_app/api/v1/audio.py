from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from serve_app.api.deps import CurrentPrincipal, State
from serve_app.protocol.content import SpeechRequest
from serve_app.services.audio import CONTENT_TYPES, encode

router = APIRouter(tags=["openai"])


@router.post("/v1/audio/speech", responses={200: {"content": {t: {} for t in CONTENT_TYPES.values()}}})
async def create_speech(body: SpeechRequest, principal: CurrentPrincipal, state: State):
    """OpenAI text to speech: audio in the requested format (default mp3, as OpenAI)."""
    state.catalog.resolve("tts", body.model)
    result = await state.content.speech(principal, body.input, body.voice, body.speed)
    # MP3/FLAC encoding takes ~0.1 s per minute of audio: off the event loop.
    audio = await asyncio.to_thread(encode, result["audio"], result["sample_rate"], body.response_format)
    return Response(audio, media_type=CONTENT_TYPES[body.response_format])
