"""How many tokens an embedding model reads, and inputs checked against it (or cut to fit, when the caller asks):
in the ingress, before texts of concurrent requests are merged into one model call, so that one request's
overlong input fails that request alone. As OpenAI and vLLM do, an input past the window is an error unless the
caller sets vLLM's `truncate_prompt_tokens` (and `truncation_side`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from serve_app.errors import EduserveError, ErrorCode

Side = Literal["left", "right"]


@dataclass(frozen=True)
class InputWindow:
    tokenizer: Any  # a `tokenizers.Tokenizer`, without truncation or padding
    max_tokens: int  # what the model reads of one input, special tokens included
    specials: int  # the special tokens it adds to one input

    @classmethod
    def from_model(cls, serialized_tokenizer: str, max_tokens: int) -> InputWindow:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(serialized_tokenizer)
        tokenizer.no_truncation()
        tokenizer.no_padding()
        specials = len(tokenizer.encode("", add_special_tokens=True).ids)
        return cls(tokenizer, max_tokens, specials)

    def limit(self, truncate: int | None) -> int:
        """The tokens an input may have: the window, or what `truncate_prompt_tokens` keeps (-1: the window)."""
        if truncate is None or truncate == -1:
            return self.max_tokens
        if not self.specials < truncate <= self.max_tokens:
            raise EduserveError(
                ErrorCode.BAD_REQUEST,
                f"truncate_prompt_tokens must be -1 (the model's window) or from {self.specials + 1} to "
                f"{self.max_tokens}, special tokens included; got {truncate}",
                param="truncate_prompt_tokens",
            )
        return truncate

    def fits_at_a_glance(self, inputs: list[str | list[int]], truncate: int | None) -> bool:
        """Whether every input fits without tokenising it: token ids by their count, ASCII text by its length (an
        ASCII character is at least one token's worth of text for WordPiece, BPE and SentencePiece alike, +1 for
        SentencePiece's leading word marker). Cheap enough for the event loop; `fit` may not be."""
        room = self.limit(truncate) - self.specials
        return all(len(item) + (1 if isinstance(item, str) else 0) <= room
                   and (not isinstance(item, str) or item.isascii()) for item in inputs)

    def fit(self, inputs: list[str | list[int]], truncate: int | None, side: Side = "right",
            ) -> list[str | list[int]]:
        """`inputs` (texts, or token ids without special tokens) as the model will read them: unchanged when they
        fit; cut to the limit when `truncate` is set; else a 400 naming the first that does not fit."""
        limit = self.limit(truncate)
        fitted = list(inputs)
        for index, item in enumerate(inputs):
            if isinstance(item, str):
                if self.fits_at_a_glance([item], truncate):
                    continue
                encoding = self.tokenizer.encode(item)
                tokens = len(encoding.ids)
            else:
                tokens = len(item) + self.specials
            if tokens <= limit:
                continue
            if truncate is None:
                raise EduserveError(
                    ErrorCode.CONTEXT_LENGTH_EXCEEDED,
                    f"input {index} has {tokens} tokens; this model reads at most {self.max_tokens} (special tokens "
                    "included). Shorten it, or set truncate_prompt_tokens (-1: the model's window) to embed part",
                    param="input",
                )
            keep = limit - self.specials
            if isinstance(item, str):
                fitted[index] = self._cut_to_fit(item, encoding, keep, limit, side)
            else:
                fitted[index] = item[:keep] if side == "right" else item[-keep:]
        return fitted

    def _cut_to_fit(self, text: str, encoding: Any, keep: int, limit: int, side: Side) -> str:
        """The cut text, checked by tokenising it again: a word cut inside may come out as more tokens than it
        went in as (the last pieces of 'photosynthesis' are not a word's first), so keep a token fewer until it
        fits, and at the last a character fewer."""
        def fits(candidate: str) -> bool:
            return len(self.tokenizer.encode(candidate).ids) <= limit

        cut = _cut_text(text, encoding, keep, side)
        while not fits(cut) and keep > 1:
            keep -= 1
            cut = _cut_text(text, encoding, keep, side)
        while not fits(cut) and len(cut) > 1:  # one token's worth of a word, still too many: a character less
            cut = cut[1:] if side == "left" else cut[:-1]
        return cut


def _cut_text(text: str, encoding: Any, keep: int, side: Side) -> str:
    """The longest run of whole words of `text` from its start ('right') or end ('left') within `keep` tokens, so
    that the model, tokenising the cut text again, reads exactly those tokens; a word longer than `keep` tokens
    at that end is cut inside it. Called only when the text has more than `keep` tokens."""
    content = [i for i, special in enumerate(encoding.special_tokens_mask) if not special]
    words = [encoding.word_ids[i] for i in content]
    if side == "right":
        end = keep  # the first token dropped: moved back to the start of its word
        while end > 0 and words[end] == words[end - 1]:
            end -= 1
        return text[:encoding.offsets[content[(end or keep) - 1]][1]]
    start = len(content) - keep  # the first token kept: moved on to the start of the next word
    while start < len(content) and words[start] == words[start - 1]:
        start += 1
    if start == len(content):
        start = len(content) - keep
    return text[encoding.offsets[content[start]][0]:]
