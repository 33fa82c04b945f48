"""How simplify and translate cut a long text into pieces for the LLM (pure logic)."""

from __future__ import annotations

from serve_app.services.content import word_chunks


def words(text: str) -> list[str]:
    return text.split()


def test_a_short_text_is_one_piece_unchanged():
    text = "Volcanoes erupt when magma rises.\n\nLava cools into rock."
    assert word_chunks(text, 50) == [text]


def test_paragraphs_are_packed_in_order_without_losing_a_word():
    paragraphs = [" ".join(f"p{p}w{w}" for w in range(30)) + "." for p in range(5)]
    text = "\n\n".join(paragraphs)
    pieces = word_chunks(text, 70)
    assert pieces == ["\n\n".join(paragraphs[0:2]), "\n\n".join(paragraphs[2:4]), paragraphs[4]]
    assert words(" ".join(pieces)) == words(text)


def test_a_long_paragraph_is_cut_at_sentence_ends_and_an_endless_sentence_at_the_limit():
    sentences = [" ".join(f"s{s}w{w}" for w in range(8)) + "." for s in range(10)]
    endless = " ".join(f"e{w}" for w in range(45))
    text = "Intro.\n\n" + " ".join(sentences) + "\n\n\n" + endless
    pieces = word_chunks(text, 20)
    assert all(len(words(piece)) <= 20 for piece in pieces)
    assert words(" ".join(pieces)) == words(text)
    assert pieces[0] == "Intro.\n\n" + sentences[0] + " " + sentences[1]  # sentences joined by a space again
    assert all(not piece.startswith(("\n", " ")) for piece in pieces)
