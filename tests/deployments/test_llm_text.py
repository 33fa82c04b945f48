"""Pre/post-processing around LLM backends, with the real SmolLM2 tokenizer (no model needed)."""

from __future__ import annotations

import pytest

from deployments.llm_text import IncrementalDecoder, PromptTooLong, finish_reason, fit_history, render_prompt


@pytest.fixture(scope="module")
def tokenizer(prepared_models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(prepared_models / "smollm2-135m-instruct" / "hf")


def test_prepared_tokenizer_has_the_fixed_special_tokens(tokenizer):
    assert tokenizer.eos_token == "<|im_end|>"
    ids = render_prompt(tokenizer, [{"role": "user", "content": "hi"}])
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system") and text.rstrip().endswith("<|im_start|>assistant")
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")  # no extra BOS in front


def conversation(turns: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "Be brief."}]
    for i in range(turns):
        messages += [{"role": "user", "content": f"question {i} " * 20}, {"role": "assistant", "content": f"answer {i} " * 20}]
    return messages + [{"role": "user", "content": "the last question"}]


def test_history_is_trimmed_to_the_budget_newest_first(tokenizer):
    messages = conversation(10)
    kept, ids = fit_history(tokenizer, messages, history_budget=300, context_length=8192, max_tokens=50)
    assert kept[0] == messages[0] and kept[-1] == messages[-1]  # system and the new question always stay
    assert len(ids) <= 300
    assert len(kept) < len(messages)
    kept_turns = kept[1:-1]
    assert kept_turns == messages[len(messages) - 1 - len(kept_turns):-1]  # the newest turns, contiguous
    assert kept_turns[0]["role"] == "user"  # never starts on an orphaned assistant turn


def test_history_fits_the_context_even_without_a_budget(tokenizer):
    kept, ids = fit_history(tokenizer, conversation(10), history_budget=None, context_length=600, max_tokens=100)
    assert len(ids) + 100 <= 600 and len(kept) > 2


def test_a_prompt_that_cannot_fit_is_refused(tokenizer):
    with pytest.raises(PromptTooLong, match="exceeds the model's context"):
        fit_history(tokenizer, [{"role": "user", "content": "word " * 3000}], None, context_length=1024, max_tokens=64)


def test_decoder_never_splits_a_character(tokenizer):
    text = "Größe: 温度 ☃ done"
    ids = tokenizer.encode(text, add_special_tokens=False)
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push([i]) for i in ids] + [decoder.finish()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)


def test_decoder_holds_back_and_cuts_stop_strings(tokenizer):
    text = "Paris is the capital. END and more text after it"
    ids = tokenizer.encode(text, add_special_tokens=False)
    decoder = IncrementalDecoder(tokenizer, stop=["END"])
    streamed = ""
    for i in ids:
        streamed += decoder.push([i])
        assert "E" not in streamed.split("capital.")[-1] or decoder.stopped
        if decoder.stopped:
            break
    streamed += decoder.finish()
    assert decoder.stopped and streamed == "Paris is the capital. "


def test_finish_reasons():
    assert finish_reason(True, 5, 100) == "stop"
    assert finish_reason(False, 100, 100) == "length"
    assert finish_reason(False, 7, 100) == "stop"
