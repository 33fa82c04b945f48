"""Paragraphs and sentences, for work done a piece at a time: translation models that take one sentence within
their window, and LLM rewrites of texts longer than one answer."""

from __future__ import annotations

import re

PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
SENTENCE_BREAK = re.compile(r"(?<=[.!?。！？])\s+")


def paragraphs(text: str) -> list[str]:
    """The text's blank-line separated paragraphs, stripped; empty ones dropped."""
    return [paragraph.strip() for paragraph in PARAGRAPH_BREAK.split(text) if paragraph.strip()]


def sentences(paragraph: str) -> list[str]:
    """The paragraph's sentences (cut after `.`, `!`, `?` and their CJK forms), stripped; empty ones dropped."""
    return [sentence for sentence in SENTENCE_BREAK.split(paragraph.strip()) if sentence]
