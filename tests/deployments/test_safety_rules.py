"""Rule-based safety checks: personal data and self-harm phrases."""

from __future__ import annotations

import pytest

from deployments.safety_rules import find_pii, luhn_valid, redact, self_harm_score


def kinds(text: str) -> list[str]:
    return [span.kind for span in find_pii(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to alice.smith+school@example.co.uk today", ["email"]),
        ("call me on +44 20 7946 0958 after class", ["phone"]),
        ("my number is (555) 123-4567 ok", ["phone"]),
        ("card 4111 1111 1111 1111 expires soon", ["card"]),
        ("I live at 221 Baker Street in London", ["address"]),
        ("email a@b.org or phone 07700 900123", ["email", "phone"]),
    ],
)
def test_personal_data_is_found(text, expected):
    assert kinds(text) == expected


@pytest.mark.parametrize(
    "text",
    ["The year 1969 had 365 days.", "Page 42 of chapter 7.", "4111 1111 1111 1112 is not a valid card",
     "Add 12345 and 678.", "Mount Everest is 8849 metres high."],
)
def test_ordinary_numbers_are_not_personal_data(text):
    assert kinds(text) == []


def test_luhn():
    assert luhn_valid("4111111111111111") and luhn_valid("5500 0000 0000 0004")
    assert not luhn_valid("4111111111111112") and not luhn_valid("1234")


def test_redaction_replaces_each_span():
    text = "Mail bob@example.com or call +1 415 555 2671."
    assert redact(text, find_pii(text)) == "Mail [EMAIL] or call [PHONE]."


@pytest.mark.parametrize("text", ["I want to die", "sometimes I think about killing myself", "Self-harm helps",
                                  "I keep hurting myself"])
def test_self_harm_phrases(text):
    assert self_harm_score(text) == 1.0


@pytest.mark.parametrize("text", ["The cell will die without oxygen", "kill the process", "a harmless joke"])
def test_no_self_harm_false_positives(text):
    assert self_harm_score(text) == 0.0
