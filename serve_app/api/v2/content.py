from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from serve_app.api.deps import CurrentPrincipal, State
from serve_app.errors import EduserveError
from serve_app.protocol.content import (
    SimplifyRequest,
    SimplifyResponse,
    TranslateRequest,
    TranslateResponse,
    TTSRequest,
)
from serve_app.services.audio import STREAMING_DATA_SIZE, pcm16, wav_header

router = APIRouter(tags=["content"])
logger = logging.getLogger("ray.serve.eduserve.content")


@router.post("/v2/content/simplify", response_model=SimplifyResponse)
async def simplify(body: SimplifyRequest, principal: CurrentPrincipal, state: State):
    """Rewrite for a reading level (default: the profile's); Flesch-Kincaid grade and reading ease before/after."""
    return await state.content.simplify(principal, body.text, body.reading_level)


@router.post("/v2/content/translate", response_model=TranslateResponse)
async def translate(body: TranslateRequest, principal: CurrentPrincipal, state: State):
    """Translate (default target: the profile's language), by a translation model when one serves the pair."""
    return await state.content.translate(principal, body.text, body.target_language, body.source_language)


@router.post("/v2/content/tts", responses={200: {"content": {"audio/wav": {}}}})
async def tts(body: TTSRequest, principal: CurrentPrincipal, state: State):
    """Speech for long text, streamed as WAV: each sentence is sent as soon as it is synthesised."""
    sample_rate, sentences = await state.content.speech_stream(principal, body.text, body.voice, body.speed)

    async def wav():
        yield wav_header(sample_rate, STREAMING_DATA_SIZE)
        try:
            async for audio in sentences:
                yield pcm16(audio)
        except EduserveError as exc:  # a WAV stream has no way to say so: it ends here (the TTS replica logs why)
            logger.info("speech stream ended early: %s", exc.message)

    return StreamingResponse(wav(), media_type="audio/wav")
