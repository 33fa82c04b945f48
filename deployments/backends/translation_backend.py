"""CTranslate2 `Translator` for one language pair (Marian / NLLB models converted with ctranslate2's
converter, the tokenizer files copied next to the weights).

Such models translate one sentence at a time within `max_length` tokens: `split` cuts a text into paragraphs of
sentences that fit (an overlong sentence is halved at word boundaries until it does), so no part of a long text
is cut off by the model's window."""

from __future__ import annotations

from collections.abc import Sequence

from deployments.common import DeviceInfo
from deployments.spec import BackendSpec
from deployments.text_split import paragraphs, sentences


class CTranslate2Translation:
    def __init__(self, spec: BackendSpec, device: DeviceInfo):
        import ctranslate2
        from transformers import AutoTokenizer

        options = dict(spec.options)
        cuda = device.kind == "cuda"
        self.translator = ctranslate2.Translator(
            spec.model, device="cuda" if cuda else "cpu",
            compute_type=options.pop("compute_type", "int8_float16" if cuda else "int8"),
            intra_threads=int(options.pop("intra_threads", 1)),
        )
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model)
        self.beam_size = int(options.pop("beam_size", 2))
        self.max_length = int(options.pop("max_length", 256))
        self.target_prefix = options.pop("target_prefix", None)  # NLLB: the target language token

    def split(self, text: str) -> list[list[str]]:
        """Paragraphs, each a list of sentences short enough for the model."""
        return [[piece for sentence in sentences(paragraph) for piece in self._fit(sentence)]
                for paragraph in paragraphs(text)]

    def _fit(self, sentence: str) -> list[str]:
        words = sentence.split()
        if not words:
            return []
        if len(words) == 1 or len(self.tokenizer.encode(sentence)) <= self.max_length:
            return [" ".join(words)]
        half = len(words) // 2
        return self._fit(" ".join(words[:half])) + self._fit(" ".join(words[half:]))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]]

    def translate(self, texts: Sequence[str]) -> list[str]:
        sources = [
            self.tokenizer.convert_ids_to_tokens(self.tokenizer.encode(text, truncation=True, max_length=self.max_length))
            for text in texts
        ]
        results = self.translator.translate_batch(
            sources, beam_size=self.beam_size, max_decoding_length=self.max_length,
            target_prefix=[[self.target_prefix]] * len(sources) if self.target_prefix else None,
        )
        outputs = []
        for result in results:
            tokens = result.hypotheses[0][1:] if self.target_prefix else result.hypotheses[0]
            outputs.append(self.tokenizer.decode(self.tokenizer.convert_tokens_to_ids(tokens), skip_special_tokens=True))
        return outputs
