"""Content tools: simplify text for a reading level (readability measured before and after), translate (the
Translator deployment for a configured language pair, the LLM otherwise), and speech. Every text in and out
passes the safety pipeline."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import langcodes
import textstat
from pyphen import Pyphen

from deployments.text_split import paragraphs, sentences
from serve_app.errors import EduserveError, ErrorCode
from serve_app.protocol.common import language_tag
from serve_app.routing import ModelRouter
from serve_app.security.principal import Principal
from serve_app.services.chat import ChatService
from serve_app.services.profiles import ProfileService
from serve_app.services.safety import ContentBlocked, SafetyService
from serve_app.services.usage import Consumed, UsageMeter
from serve_app.settings import ContentSettings

logger = logging.getLogger("ray.serve.eduserve.content")

DEFAULT_LEVEL = "grade 5"
CEFR = {"A1": "beginner", "A2": "elementary", "B1": "intermediate", "B2": "upper-intermediate",
        "C1": "advanced", "C2": "proficient"}
# OpenAI's voice names, accepted so existing clients work unchanged: they get the default voice.
OPENAI_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse"}


def describe_level(level: str) -> str:
    if level in CEFR:
        return f"CEFR level {level} ({CEFR[level]} English learner)"
    grade = int(level.split()[1])
    return f"a school {level} reading level (about age {grade + 5})"


_HYPHENATOR = Pyphen(lang="en_US")
WORD = re.compile(r"[A-Za-z][A-Za-z']*")


def readability(text: str) -> dict[str, Any]:
    """Flesch-Kincaid grade and Flesch reading ease. Words and sentences are counted by textstat; syllables by
    pyphen's hyphenation dictionary (textstat's own syllable counter fetches NLTK's cmudict at run time, and
    this service never downloads anything)."""
    words = WORD.findall(text)
    count = max(1, textstat.lexicon_count(text))
    sentences = max(1, textstat.sentence_count(text))
    syllables = sum(len(_HYPHENATOR.positions(word.lower())) + 1 for word in words)
    per_sentence, per_word = count / sentences, syllables / max(1, len(words))
    return {
        "flesch_kincaid_grade": round(0.39 * per_sentence + 11.8 * per_word - 15.59, 2),
        "flesch_reading_ease": round(206.835 - 1.015 * per_sentence - 84.6 * per_word, 2),
        "words": count,
        "sentences": sentences,
    }


def word_chunks(text: str, max_words: int) -> list[str]:
    """Paragraphs packed in order into pieces of at most `max_words` words; a longer paragraph is cut at sentence
    ends (a sentence longer still, at `max_words`). Every word is kept."""
    pieces: list[str] = []
    current: list[str] = []
    count = 0

    def add(part: str, separator: str) -> None:
        nonlocal count
        words = len(part.split())
        if current and count + words > max_words:
            pieces.append("".join(current))
            current.clear()
            count = 0
        current.append(part if not current else separator + part)
        count += words

    for paragraph in paragraphs(text):
        parts = [paragraph]
        if len(paragraph.split()) > max_words:
            parts = [" ".join(words[start:start + max_words])
                     for words in (sentence.split() for sentence in sentences(paragraph))
                     for start in range(0, len(words), max_words)]
        for index, part in enumerate(parts):
            add(part, "\n\n" if index == 0 else " ")
    if current:
        pieces.append("".join(current))
    return pieces


def language_name(tag: str) -> str:
    """`pt-BR` → `Portuguese (Brazil)`: what the LLM is asked to translate into."""
    return langcodes.Language.get(tag).display_name()


class TranslatorClient:
    """The Translator deployment: one model per language pair, chosen by multiplexed model id (`en-fr`)."""

    def __init__(self, router: ModelRouter, pairs: list[str], meter: UsageMeter):
        self.router = router
        self.pairs = set(pairs)
        self.meter = meter

    def pair(self, source: str, target: str) -> str | None:
        pair = f"{langcodes.Language.get(source).language}-{langcodes.Language.get(target).language}"
        return pair if pair in self.pairs else None

    async def translate(self, text: str, pair: str) -> str:
        result = await self.router.call("translate", [text], multiplexed_model_id=pair)
        self.meter.record(pair, "translation", Consumed(documents=1))
        return result["texts"][0]


class ContentService:
    def __init__(self, chat: ChatService, safety: SafetyService, profiles: ProfileService, tts_router: ModelRouter,
                 tts_model: str, settings: ContentSettings, meter: UsageMeter,
                 translator: TranslatorClient | None = None):
        self.chat = chat
        self.safety = safety
        self.profiles = profiles
        self.tts_router = tts_router
        self.settings = settings
        self.meter = meter
        self.translator = translator
        self.tts_model = tts_model  # the served name usage is counted under

    async def _generate(self, principal: Principal, instruction: str, text: str, tokens_per_word: int) -> str:
        """The LLM's rewrite of `text`, piece by piece (pieces run concurrently and are batched by the LLM
        deployment), with room for `tokens_per_word` output tokens per input word; checked as a whole."""

        async def rewrite(piece: str) -> str:
            payload = self.chat.payload(
                [{"role": "system", "content": "You rewrite and translate texts for school students. Reply with "
                                               "the requested text only, with no introduction."},
                 {"role": "user", "content": f"{instruction}\n\nText:\n{piece}"}],
                max_tokens=tokens_per_word * len(piece.split()) + 64, temperature=0.0,
            )
            return (await self.chat.complete(payload))["text"].strip()

        pieces = word_chunks(text, self.settings.chunk_words)
        rewritten = "\n\n".join(await asyncio.gather(*(rewrite(piece) for piece in pieces)))
        answer, blocked = await self.safety.check_output(principal, rewritten)
        if blocked:
            raise ContentBlocked(blocked, f"the generated text was blocked by the safety policy ({blocked})")
        return answer.strip()

    async def simplify(self, principal: Principal, text: str, level: str | None) -> dict[str, Any]:
        text = await self.safety.check_input(principal, text)
        level = level or (await self.profiles.get(principal.user_id)).get("reading_level") or DEFAULT_LEVEL
        instruction = (f"Rewrite this text for {describe_level(level)}. Use short sentences and simple, common "
                       "words. Keep all the important facts.")
        simplified = await self._generate(principal, instruction, text, tokens_per_word=2)
        return {"text": simplified, "reading_level": level, "model": self.chat.model_name(None),
                "readability": {"before": readability(text), "after": readability(simplified)}}

    async def translate(self, principal: Principal, text: str, target: str | None, source: str) -> dict[str, Any]:
        text = await self.safety.check_input(principal, text)
        if target is None:
            preferred = (await self.profiles.get(principal.user_id)).get("preferred_language")
            if not preferred:
                raise EduserveError(ErrorCode.VALIDATION_ERROR,
                                    "target_language: required (or set preferred_language in your profile)")
            try:  # profiles saved before languages were validated may hold anything
                target = language_tag(preferred)
            except ValueError as error:
                raise EduserveError(ErrorCode.VALIDATION_ERROR, f"profile preferred_language: {error}") from None
        pair = self.translator.pair(source, target) if self.translator else None
        if pair is not None:
            translated = await self.translator.translate(text, pair)
            shown, blocked = await self.safety.check_output(principal, translated)
            if blocked:
                raise ContentBlocked(blocked, f"the translation was blocked by the safety policy ({blocked})")
            return {"text": shown, "source_language": source, "target_language": target, "engine": "translator",
                    "model": pair}
        instruction = f"Translate this text from {language_name(source)} into {language_name(target)}."
        translated = await self._generate(principal, instruction, text, tokens_per_word=3)
        return {"text": translated, "source_language": source, "target_language": target, "engine": "llm",
                "model": self.chat.model_name(None)}

    async def voice_for(self, principal: Principal, requested: str | None) -> str | None:
        """Requested voice (OpenAI names → the default), else the profile's, else the deployment default."""
        if requested in OPENAI_VOICES:
            return None
        if requested:
            return requested
        return (await self.profiles.get(principal.user_id)).get("voice")

    async def speech(self, principal: Principal, text: str, voice: str | None, speed: float) -> dict[str, Any]:
        text = await self.safety.check_input(principal, text)
        result = await self.tts_router.call("speak", text, await self.voice_for(principal, voice), speed)
        self.meter.record(self.tts_model, "speech", Consumed(audio_seconds=len(result["audio"]) / result["sample_rate"]))
        return result

    async def speech_stream(self, principal: Principal, text: str, voice: str | None, speed: float):
        """(sample_rate, async iterator of float32 sentence audio). A refusal (unknown voice, ...) is raised here,
        before any audio; a failure after the first sentence is raised by the iterator, for the route to end its
        stream as its format allows."""
        text = await self.safety.check_input(principal, text)
        items = self.tts_router.stream("speak_stream", text, await self.voice_for(principal, voice), speed)
        first = await anext(items)

        async def audio():
            samples = 0
            try:
                async for item in items:
                    samples += len(item["audio"])
                    yield item["audio"]
            finally:  # counted as far as it got, also when the client left
                seconds = samples / first["sample_rate"]
                self.meter.record(self.tts_model, "speech", Consumed(audio_seconds=seconds))

        return first["sample_rate"], audio()
