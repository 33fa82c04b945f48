"""Chunking, extraction and rank fusion: pure logic, with the packaged MiniLM tokenizer."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from serve_app.services.chunking import ExtractionError, chunk_text, extract_text, normalise, sections
from serve_app.services.rag import reciprocal_rank_fusion
from tests.support.pdf import text_pdf


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    tok = Tokenizer.from_file(f"{minilm_path}/tokenizer.json")
    tok.no_truncation()
    tok.no_padding()
    return tok


def test_markdown_sections_nest_headings():
    text = "# A\nintro\n## B\nbody b\n### C\nbody c\n## D\nbody d\n# E\nbody e"
    assert sections(text, markdown=True) == [
        ("A", "intro"), ("A > B", "body b"), ("A > B > C", "body c"), ("A > D", "body d"), ("E", "body e"),
    ]
    assert sections("# not a heading in plain text", markdown=False) == [(None, "# not a heading in plain text")]


def test_windows_respect_the_budget_overlap_and_cover_everything(tokenizer):
    text = " ".join(f"Fact {i} is a short sentence about science." for i in range(80))
    chunks = chunk_text(text, tokenizer, max_tokens=50, overlap=10, markdown=False)
    assert len(chunks) > 5 and all(c.token_count <= 50 for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    for previous, current in zip(chunks, chunks[1:], strict=False):
        assert current.text.split()[0] in previous.text  # overlap: each window starts inside the last one
    assert "Fact 0 " in chunks[0].text and "Fact 79 " in chunks[-1].text
    assert all(c.text.endswith(".") for c in chunks[:-1])  # cut at sentence ends


def test_short_text_is_one_chunk_with_its_heading(tokenizer):
    (chunk,) = chunk_text("## Tides\nThe Moon pulls the oceans.", tokenizer, 200, 40, markdown=True)
    assert chunk.heading == "Tides" and chunk.text == "The Moon pulls the oceans."
    assert chunk.embedding_text() == "Tides\nThe Moon pulls the oceans."


def test_overlap_must_be_smaller_than_the_window(tokenizer):
    with pytest.raises(ValueError):
        chunk_text("x", tokenizer, 10, 10, markdown=False)


def test_extraction_and_normalisation():
    assert extract_text("héllo".encode(), "text/plain") == "héllo"
    assert "Igneous" in extract_text(text_pdf(["Igneous rocks cool from magma."]), "application/pdf")
    with pytest.raises(ExtractionError):
        extract_text(b"\xff\xfe\x00bad", "text/plain")
    with pytest.raises(ExtractionError):
        extract_text(b"%PDF-1.4 broken", "application/pdf")
    assert normalise("a  \r\nb\r\n\r\n") == normalise("a\nb") == "a\nb"


def test_reciprocal_rank_fusion():
    scores = reciprocal_rank_fusion([[1, 2, 3], [3, 4]], k=60)
    assert scores[3] == pytest.approx(1 / 63 + 1 / 61)
    assert max(scores, key=scores.get) == 3  # found by both lists beats first in one
    assert scores[4] == pytest.approx(1 / 62)
