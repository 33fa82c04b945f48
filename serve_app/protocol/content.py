"""`/v1/audio/speech`, `/v1/moderations`, `/v2/content/*` and `/v2/profiles/*` schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from serve_app.protocol.common import LanguageTag, OpenAICompatibleRequest, RequestModel, StrictRequest

READING_LEVEL = r"^(?:grade (?:[1-9]|1[0-2])|[ABC][12])$"
AudioFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]


class SpeechRequest(OpenAICompatibleRequest):
    model: str | None = None
    input: str = Field(min_length=1, max_length=4096)
    voice: str = Field("heart", description="a served voice; OpenAI's voice names map to the default voice")
    response_format: AudioFormat = Field("mp3", description="pcm: 16-bit little-endian at 24 kHz, as OpenAI's")
    speed: float = Field(1.0, ge=0.25, le=4.0, description="OpenAI's range; past 0.5-2 the audio is time-stretched")
    stream_format: Literal["audio", "sse"] = Field(
        "audio", description="sse: server-sent events `speech.audio.delta` (base64 audio in response_format, "
        "sentence by sentence) and a last `speech.audio.done`")
    instructions: str | None = Field(None, description="not taken: the served voices have no style control")

    @field_validator("instructions")
    @classmethod
    def _no_instructions(cls, value: str | None) -> str | None:
        if value and value.strip():
            raise ValueError("the served voices take no instructions (OpenAI's tts-1 neither); leave it out")
        return value


class ModerationTextPart(BaseModel):
    type: Literal["text"]
    text: str


class ModerationImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: dict[str, Any]


class ModerationRequest(OpenAICompatibleRequest):
    input: str | list[str] | list[Annotated[ModerationTextPart | ModerationImagePart, Field(discriminator="type")]] = (
        Field(description="one text, a list of texts (a result each), or OpenAI's content parts (one result)"))
    model: str | None = None

    @field_validator("input")
    @classmethod
    def _text_parts_only(cls, value: Any) -> Any:
        if isinstance(value, list) and any(isinstance(part, ModerationImagePart) for part in value):
            raise ValueError("image parts are not moderated here: the served models read text only")
        return value

    def texts(self) -> list[str]:
        """One text per result: content parts are one input, as OpenAI moderates them together."""
        if isinstance(self.input, str):
            return [self.input]
        if self.input and isinstance(self.input[0], ModerationTextPart):
            return ["\n".join(part.text for part in self.input)]  # type: ignore[union-attr]
        return list(self.input)  # type: ignore[arg-type]


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]


class SimplifyRequest(StrictRequest):
    text: str = Field(min_length=1, max_length=8000)
    reading_level: str | None = Field(None, pattern=READING_LEVEL,
                                      description="`grade 1`..`grade 12` or CEFR `A1`..`C2`; default: your profile's")


class Readability(BaseModel):
    flesch_kincaid_grade: float
    flesch_reading_ease: float
    words: int
    sentences: int


class SimplifyResponse(BaseModel):
    text: str
    reading_level: str
    readability: dict[Literal["before", "after"], Readability]
    model: str


class TranslateRequest(StrictRequest):
    text: str = Field(min_length=1, max_length=8000)
    target_language: LanguageTag | None = Field(
        None, description="a code (`fr`, `pt-BR`) or a name (`French`); default: your profile's language")
    source_language: LanguageTag = "en"


class TranslateResponse(BaseModel):
    text: str
    source_language: str
    target_language: str
    engine: Literal["llm", "translator"]
    model: str


class TTSRequest(StrictRequest):
    text: str = Field(min_length=1, max_length=100_000)
    voice: str | None = Field(None, description="default: your profile's voice, else the service default")
    speed: float = Field(1.0, ge=0.25, le=4.0, description="OpenAI's range; past 0.5-2 the audio is time-stretched")


class Profile(RequestModel):
    reading_level: str | None = Field(None, pattern=READING_LEVEL)
    preferred_language: LanguageTag | None = None
    voice: str | None = Field(None, max_length=40)
    interests: list[str] = Field(default_factory=list, max_length=20)


class ProfileOut(Profile):
    updated_at: datetime | None = None


class ProgressEvent(StrictRequest):
    kind: Literal["document_read", "quiz_score", "lesson_completed"]
    document_id: str | None = None
    topic: str | None = Field(None, max_length=200)
    score: float | None = Field(None, ge=0)
    max_score: float | None = Field(None, gt=0)


class ProgressSummary(BaseModel):
    events: int
    by_kind: dict[str, int]
    documents_read: int
    quizzes: int
    average_quiz_percent: float | None
    last_activity: datetime | None
    recent: list[dict[str, Any]]
