"""Pre- and post-processing around any LLM backend: chat templates, history budgets, incremental decoding and
stop strings. Pure logic on a tokenizer, unit-tested without a model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


class PromptTooLong(ValueError):
    """The prompt (after trimming what may be trimmed) plus max_tokens does not fit the context."""


def render_prompt(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """Token ids of the chat, ending with the assistant's turn, via the tokenizer's own chat template."""
    ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # some tokenizers return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def fit_history(
    tokenizer: Any,
    messages: Sequence[dict[str, str]],
    history_budget: int | None,
    context_length: int,
    max_tokens: int,
) -> tuple[list[dict[str, str]], list[int]]:
    """Keep the system messages and the last message always; add earlier turns newest first while the prompt
    stays within `history_budget` tokens (when given) and leaves room for `max_tokens` in the context."""
    system = [m for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    if not turns:
        raise PromptTooLong("no user message to answer")
    limit = context_length - max_tokens
    if history_budget is not None:
        limit = min(limit, history_budget)
    kept = [turns[-1]]
    ids = render_prompt(tokenizer, system + kept)
    if len(ids) + max_tokens > context_length:
        raise PromptTooLong(
            f"the prompt has {len(ids)} tokens; with max_tokens={max_tokens} it exceeds the model's context of "
            f"{context_length} tokens"
        )
    for message in reversed(turns[:-1]):
        candidate = render_prompt(tokenizer, system + [message] + kept)
        if len(candidate) > limit:
            break
        kept.insert(0, message)
        ids = candidate
    # A conversation must not start with an orphaned assistant turn.
    while len(kept) > 1 and kept[0]["role"] == "assistant":
        kept.pop(0)
        ids = render_prompt(tokenizer, system + kept)
    return system + kept, ids


@dataclass
class IncrementalDecoder:
    """Turns streamed token ids into text deltas that never split a UTF-8 character and never show a stop
    string (or its beginning, which is held back until it can no longer become one)."""

    tokenizer: Any
    stop: Sequence[str] = ()
    ids: list[int] = field(default_factory=list)
    emitted: int = 0
    stopped: bool = False
    _text: str = ""

    def push(self, new_ids: Sequence[int]) -> str:
        if self.stopped:
            return ""
        self.ids.extend(new_ids)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
            return ""
        self._text = text
        for stop in self.stop:
            index = text.find(stop)
            if index >= 0:
                self.stopped = True
                self._text = text[:index]
                return self._take(len(self._text))
        hold = max((len(s) - 1 for s in self.stop), default=0)
        return self._take(max(self.emitted, len(text) - hold))

    def finish(self) -> str:
        """The rest of the text once generation has ended."""
        return self._take(len(self._text))

    @property
    def text(self) -> str:
        return self._text

    def _take(self, end: int) -> str:
        delta = self._text[self.emitted:end]
        self.emitted = max(self.emitted, end)
        return delta


def finish_reason(stopped_by_string: bool, generated: int, max_tokens: int) -> str:
    if stopped_by_string:
        return "stop"
    return "length" if generated >= max_tokens else "stop"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """Token counts in the OpenAI shape, as every answer reports them."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
