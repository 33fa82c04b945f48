"""Language tags accepted by translate and profiles (pure logic over langcodes' data)."""

from __future__ import annotations

import pytest

from serve_app.protocol.common import language_tag
from serve_app.services.content import language_name


@pytest.mark.parametrize(("given", "tag"), [
    ("fr", "fr"), ("FR", "fr"), ("pt_BR", "pt-BR"), ("zh-hant", "zh-Hant"),
    ("French", "fr"), ("español", "es"), ("Deutsch", "de"), (" Swahili ", "sw"),
])
def test_codes_and_names_become_standard_tags(given, tag):
    assert language_tag(given) == tag


@pytest.mark.parametrize("given", ["zz-notalang", "und", "not a language", "12"])
def test_what_is_not_a_language_is_refused(given):
    with pytest.raises(ValueError, match="not a known language"):
        language_tag(given)


def test_the_llm_is_asked_for_the_language_by_name():
    assert language_name("pt-BR") == "Portuguese (Brazil)"
    assert language_name("de") == "German"
