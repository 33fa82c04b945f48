"""Paragraph and sentence splitting shared by the Translator and the LLM content tools (pure logic)."""

from __future__ import annotations

from deployments.text_split import paragraphs, sentences


def test_paragraphs_are_cut_at_blank_lines_and_empty_ones_dropped():
    assert paragraphs("  One.\nstill one.\n\n \n\nTwo.\n\n") == ["One.\nstill one.", "Two."]
    assert paragraphs(" \n\n ") == []


def test_sentences_end_at_latin_and_cjk_stops():
    assert sentences("Is it? Yes! It is. 3.5 stays whole") == ["Is it?", "Yes!", "It is.", "3.5 stays whole"]
    assert sentences("你好。 再见！ ok") == ["你好。", "再见！", "ok"]
