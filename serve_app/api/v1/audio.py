from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from serve_app.api.deps import CurrentPrincipal, get_state
from serve_app.protocol.common import ERROR_RESPONSES
from serve_app.protocol.content import SpeechRequest
from serve_app.services.audio import CONTENT_TYPES, encode
from serve_app.state import AppState

router = APIRouter(tags=["openai"])


@router.post("/v1/audio/speech", responses={**ERROR_RESPONSES, 200: {"content": {t: {} for t in CONTENT_TYPES.values()}}})
async def create_speech(body: SpeechRequest, principal: CurrentPrincipal, state: Annotated[AppState, Depends(get_state)]):
    """OpenAI text to speech: audio in the requested format (default mp3, as OpenAI)."""
    state.catalog.resolve("tts", body.model)
    result = await state.content.speech(principal, body.input, body.voice, body.speed)
    audio = encode(result["audio"], result["sample_rate"], body.response_format)
    return Response(audio, media_type=CONTENT_TYPES[body.response_format])
