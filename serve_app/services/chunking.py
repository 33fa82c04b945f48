"""Text extraction and token-based chunking that keeps each chunk with its heading. Pure logic."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
SENTENCE_END = re.compile(r"[.!?](\s|$)|\n\s*\n")


class ExtractionError(ValueError):
    pass


def extract_text(data: bytes, mime_type: str) -> str:
    """Plain text and Markdown as UTF-8; PDF page by page with pypdf."""
    if mime_type == "application/pdf":
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError

        try:
            reader = PdfReader(io.BytesIO(data))
            pages = [(page.extract_text() or "").replace("\x00", "") for page in reader.pages]
        except (PdfReadError, ValueError, KeyError) as exc:
            raise ExtractionError(f"unreadable PDF: {exc}") from None
        text = "\n\n".join(p.strip() for p in pages if p.strip())
        if not text:
            raise ExtractionError("the PDF has no extractable text (scanned images are not supported)")
        return text
    if b"\x00" in data:
        raise ExtractionError("a text file must not contain NUL bytes (is it a binary file?)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ExtractionError("text files must be UTF-8") from None


def normalise(text: str) -> str:
    """What the content hash is computed on: line endings and trailing spaces do not make a new document."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(lines).strip()


def sections(text: str, markdown: bool) -> list[tuple[str | None, str]]:
    """(heading path, body) pairs; in Markdown each heading starts a section and nests under its parents."""
    if not markdown:
        return [(None, text)]
    result: list[tuple[str | None, str]] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []

    def flush() -> None:
        content = "\n".join(body).strip()
        if content:
            result.append((" > ".join(title for _, title in stack) or None, content))
        body.clear()

    for line in text.split("\n"):
        match = HEADING.match(line)
        if match:
            flush()
            level = len(match.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, match.group(2)))
        else:
            body.append(line)
    flush()
    return result


@dataclass(frozen=True)
class Chunk:
    position: int
    heading: str | None
    text: str
    token_count: int

    def embedding_text(self) -> str:
        """What gets embedded: the heading travels with its text."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


def chunk_text(text: str, tokenizer: Any, max_tokens: int, overlap: int, markdown: bool) -> list[Chunk]:
    """Windows of at most `max_tokens` tokens over each section, overlapping by `overlap` tokens, cut at a
    sentence end when one falls in the window's last 40 %."""
    if overlap >= max_tokens:
        raise ValueError("overlap must be smaller than max_tokens")
    chunks: list[Chunk] = []
    for heading, body in sections(text, markdown):
        encoding = tokenizer.encode(body, add_special_tokens=False)
        offsets = encoding.offsets
        n = len(offsets)
        start = 0
        while start < n:
            end = min(n, start + max_tokens)
            if end < n:
                end = _sentence_cut(body, offsets, start, end)
            piece = body[offsets[start][0]:offsets[end - 1][1]].strip()
            if piece:
                chunks.append(Chunk(len(chunks), heading, piece, end - start))
            if end >= n:
                break
            start = max(end - overlap, start + 1)
    return chunks


def _sentence_cut(body: str, offsets: list[tuple[int, int]], start: int, end: int) -> int:
    earliest = start + int(0.6 * (end - start))
    for index in range(end - 1, earliest - 1, -1):
        char_end = offsets[index][1]
        if SENTENCE_END.match(body, char_end - 1) or body[char_end - 1:char_end] in ".!?":
            return index + 1
    return end
