"""Rule-based safety checks that need no model: personal data (detected and redacted) and self-harm phrases.
Pure logic, unit-tested."""

from __future__ import annotations

import re
from dataclasses import dataclass

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# International or national numbers: 9+ digits with optional +, spaces, dots, dashes, parentheses.
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(?\d{2,4}\)?[\s.-]?){2,4}\d{3,4}(?!\w)")
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
ADDRESS = re.compile(
    r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s+){1,3}(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Close|Way|Court|Ct|"
    r"Boulevard|Blvd|Place|Pl|Terrace|Crescent|Gardens)\b\.?",
)
SELF_HARM = re.compile(
    r"\b(?:kill(?:ing)?\s+my\s?self|suicid(?:e|al)|end(?:ing)?\s+my\s+(?:own\s+)?life|want(?:ed)?\s+to\s+die|"
    r"(?:hurt|harm|cut)(?:ing)?\s+my\s?self|self[-\s]?harm)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Span:
    kind: str  # email | phone | card | address
    start: int
    end: int


def luhn_valid(number: str) -> bool:
    digits = [int(d) for d in number if d.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def find_pii(text: str) -> list[Span]:
    """Non-overlapping personal-data spans, earliest first (a card number wins over the phone pattern)."""
    found: list[Span] = []
    for kind, pattern in (("email", EMAIL), ("card", CARD), ("address", ADDRESS), ("phone", PHONE)):
        for match in pattern.finditer(text):
            if kind == "card" and not luhn_valid(match.group()):
                continue
            if kind == "phone" and not 9 <= sum(c.isdigit() for c in match.group()) <= 15:  # E.164 is 15 max
                continue
            span = Span(kind, match.start(), match.end())
            if not any(span.start < other.end and other.start < span.end for other in found):
                found.append(span)
    return sorted(found, key=lambda s: s.start)


def redact(text: str, spans: list[Span]) -> str:
    for span in sorted(spans, key=lambda s: s.start, reverse=True):
        text = text[: span.start] + f"[{span.kind.upper()}]" + text[span.end :]
    return text


def self_harm_score(text: str) -> float:
    return 1.0 if SELF_HARM.search(text) else 0.0
