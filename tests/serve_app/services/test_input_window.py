"""The ingress's check of embedding inputs against the model's window, on the packaged MiniLM's own tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serve_app.errors import EduserveError
from serve_app.services.input_window import InputWindow


@pytest.fixture(scope="module")
def window(minilm_path) -> InputWindow:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    return InputWindow.from_model(tokenizer.backend_tokenizer.to_str(), 256)


def tokens(window: InputWindow, text: str) -> int:
    return len(window.tokenizer.encode(text).ids)


def test_specials_and_limits(window):
    assert window.specials == 2  # [CLS] and [SEP]
    assert window.limit(None) == window.limit(-1) == 256 and window.limit(3) == 3
    for bad in (0, 1, 2, 257):
        with pytest.raises(EduserveError) as raised:
            window.limit(bad)
        assert raised.value.param == "truncate_prompt_tokens"


def test_text_that_is_not_ascii_is_counted_by_its_tokens(window):
    """200 CJK characters are 202 tokens and fit; 300 are 302 tokens and do not."""
    assert window.fit(["中" * 200], None) == ["中" * 200]
    with pytest.raises(EduserveError) as raised:
        window.fit(["ok", "中" * 300], None)
    assert raised.value.code.code == "context_length_exceeded" and "input 1 has 302 tokens" in raised.value.message


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=300))
def test_ascii_text_never_has_more_tokens_than_the_fast_path_assumes(window, text):
    """The shortcut that skips tokenising short ASCII text rests on this bound."""
    assert tokens(window, text) <= len(text) + 1 + window.specials


@settings(max_examples=150, deadline=None)
@given(text=st.lists(st.sampled_from(["photosynthesis", "a", "cell's", "x-ray", "1789", "naïve", "über", "!", "中文",
                                      "supercalifragilistic", "\t", "  "]), min_size=1, max_size=120).map(" ".join),
       limit=st.integers(3, 60), side=st.sampled_from(["right", "left"]))
def test_a_cut_text_fits_and_is_the_start_or_end_of_the_text(window, text, limit, side):
    [cut] = window.fit([text], limit, side)
    assert tokens(window, cut) <= limit
    assert text.startswith(cut) if side == "right" else text.endswith(cut)
    if tokens(window, text) > limit:
        longest_word = max(tokens(window, word) - 2 for word in text.split())
        assert tokens(window, cut) >= limit - longest_word  # whole words: at most one word short


def test_a_word_cut_inside_from_the_left_still_fits(window):
    """Found by the property test above: the last pieces of a word are not a word's first, and tokenised again
    they come out as more tokens ('ynthesis' is 5 tokens, '##ynthesis' was fewer)."""
    for limit in range(3, 8):
        [cut] = window.fit(["photosynthesis"], limit, "left")
        assert tokens(window, cut) <= limit and "photosynthesis".endswith(cut)


def test_token_ids_are_cut_exactly(window):
    ids = list(range(1000, 1300))
    assert window.fit([ids], 10, "right") == [ids[:8]] and window.fit([ids], 10, "left") == [ids[-8:]]
    with pytest.raises(EduserveError):
        window.fit([ids], None)


class EmbedderStandIn:
    """The Embedder's router as the service sees it: answers the window, records the texts each embed call got."""

    fallback = None

    def __init__(self, window_answer: dict):
        self.window_answer = window_answer
        self.embedded: list[list] = []

    async def call(self, method: str, *args, multiplexed_model_id=None):
        if method == "input_window":
            return self.window_answer
        self.embedded.append(list(args[0]))
        return {"embeddings": np.zeros((len(args[0]), 384), np.float32), "token_counts": [1] * len(args[0])}


@pytest.mark.parametrize("auto_truncate", [False, True])
async def test_the_operator_may_make_cutting_the_default(minilm_path, auto_truncate):
    """`limits.embedding_auto_truncate` (TEI's --auto-truncate): a request that does not set truncate_prompt_tokens
    gets its overlong input cut to the window instead of a 400; one that sets it gets what it asked."""
    from transformers import AutoTokenizer

    from serve_app.catalog import ModelCatalog
    from serve_app.protocol.embeddings import EmbeddingRequest
    from serve_app.services.embeddings import EmbeddingService
    from serve_app.services.usage import UsageMeter
    from serve_app.settings import IngressSettings, LimitSettings, UsageSettings, load_settings

    tokenizer = AutoTokenizer.from_pretrained(minilm_path).backend_tokenizer.to_str()
    router = EmbedderStandIn({"tokenizer": tokenizer, "max_tokens": 256})
    service = EmbeddingService(router, ModelCatalog(load_settings("cpu").models.roles()),
                               LimitSettings(embedding_auto_truncate=auto_truncate), IngressSettings(),
                               UsageMeter(UsageSettings()))
    long_text = "word " * 400
    if auto_truncate:
        await service.create(EmbeddingRequest(input=long_text))
        assert len(router.embedded[-1][0]) < len(long_text)
    else:
        with pytest.raises(EduserveError) as raised:
            await service.create(EmbeddingRequest(input=long_text))
        assert raised.value.param == "input"
    await service.create(EmbeddingRequest(input=long_text, truncate_prompt_tokens=10, truncation_side="left"))
    assert router.embedded[-1][0].split() == ["word"] * 8  # the last 8 words: 10 tokens with [CLS] and [SEP]


def test_what_fits_at_a_glance(window):
    """Short ASCII text and few token ids need no tokenising (the event loop decides); the rest is left to `fit`,
    which the service runs on a worker thread."""
    assert window.fits_at_a_glance(["a" * 253, [1] * 254], None)
    assert not window.fits_at_a_glance(["a" * 254], None)  # might be 257 tokens: tokenise to know
    assert not window.fits_at_a_glance(["é"], None) and not window.fits_at_a_glance([[1] * 255], None)
    assert window.fits_at_a_glance(["a" * 5], 8) and not window.fits_at_a_glance(["a" * 6], 8)
    assert window.fit(["a" * 254], None) == ["a" * 254]  # one word: [UNK] or a few pieces, well within
