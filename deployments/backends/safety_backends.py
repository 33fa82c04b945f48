"""Safety classifiers behind one interface: scores in [0, 1] for `toxicity` and `prompt_injection`.

- `classic` (cpu default): toxicity from alt-profanity-check (a linear model, folded into matrix products), prompt
  injection from jailguard on the MiniLM ONNX export made by model preparation. jailguard downloads its model
  when the file is missing (and panics offline), so this backend refuses to load without the file.
- `transformers` (gpu profile): toxicity from a transformers text-classification model, injection from jailguard
  as above (or a second classifier named in options).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deployments.common import DeviceInfo, ModelSourceError
from deployments.spec import BackendSpec

JAILGUARD_FILE = "all-MiniLM-L6-v2.onnx"


class JailguardInjection:
    def __init__(self, model_dir: str):
        if not (Path(model_dir) / JAILGUARD_FILE).exists():
            raise ModelSourceError(f"{model_dir} has no {JAILGUARD_FILE}; run `eduserve prepare-models`")
        # Read once when jailguard first loads its detector: set before the first call, never changed after.
        os.environ["JAILGUARD_MODEL_DIR"] = model_dir
        import jailguard

        self._jailguard = jailguard
        self._jailguard.detect("warm up")  # loads the ONNX model now, not on the first request

    def scores(self, texts: Sequence[str]) -> list[float]:
        return [float(r.score) for r in self._jailguard.detect_batch(list(texts))]


class TransformersClassifier:
    """A text-classification model; the score of `positive_label` (or the highest non-neutral label)."""

    def __init__(self, source: str, device: DeviceInfo, positive_label: str | None):
        from transformers import pipeline

        self.pipe = pipeline("text-classification", model=source, device=device.torch_device, top_k=None,
                             truncation=True)
        self.positive = positive_label

    def scores(self, texts: Sequence[str]) -> list[float]:
        outputs = self.pipe(list(texts), batch_size=max(1, len(texts)))
        scores = []
        for labels in outputs:
            by_label = {item["label"].lower(): float(item["score"]) for item in labels}
            if self.positive is not None:
                scores.append(by_label.get(self.positive.lower(), 0.0))
            else:
                scores.append(max(v for k, v in by_label.items() if k not in ("neutral", "non-toxic", "label_0",
                                                                               "safe", "benign")))
        return scores


class SafetyBackend:
    """toxicity + prompt_injection scores for a batch of texts."""

    def __init__(self, spec: BackendSpec, device: DeviceInfo, toxicity: Any, injection: Any | None):
        self.spec = spec
        self.toxicity = toxicity
        self.injection = injection

    def scores(self, texts: Sequence[str], injection: bool | Sequence[bool]) -> list[dict[str, float]]:
        """`injection`: for all texts, or per text; the injection model runs only on the texts that ask for it
        (in a batch mixing a few user messages with many answer fragments, only on the messages)."""
        flags = [injection] * len(texts) if isinstance(injection, bool) else list(injection)
        toxicity = self.toxicity.scores(texts)
        injections = [0.0] * len(texts)
        asked = [index for index, flag in enumerate(flags) if flag]
        if asked and self.injection:
            for index, score in zip(asked, self.injection.scores([texts[i] for i in asked]), strict=True):
                injections[index] = score
        return [{"toxicity": t, "prompt_injection": i} for t, i in zip(toxicity, injections, strict=True)]


class ProfanityCheck:
    """alt-profanity-check's model: TF-IDF, then five linear SVMs each calibrated with a sigmoid, averaged.

    Its `predict_prob` spends ~90 % of a call in scikit-learn's per-call input validation (11 ms for four short
    texts, measured), which the Safety replica pays for every streamed word group. The same model folded into
    two matrix products gives the same probabilities (tested against `predict_prob`) in ~1.3 ms."""

    def __init__(self) -> None:
        import numpy as np
        from profanity_check import profanity_check

        model = profanity_check.model
        self._vectorizer = profanity_check.vectorizer
        self._predict = profanity_check.predict_prob
        folded = [c for c in getattr(model, "calibrated_classifiers_", [])
                  if c.method == "sigmoid" and len(c.calibrators) == 1 and c.estimator.coef_.shape[0] == 1]
        self._folded = None
        if folded and len(folded) == len(model.calibrated_classifiers_):
            self._folded = (np.stack([c.estimator.coef_.ravel() for c in folded], axis=1),
                            np.array([c.estimator.intercept_[0] for c in folded]),
                            np.array([c.calibrators[0].a_ for c in folded]),
                            np.array([c.calibrators[0].b_ for c in folded]))

    def scores(self, texts: Sequence[str]) -> list[float]:
        if self._folded is None:  # a model of another shape: the library's own path
            return [float(p) for p in self._predict(list(texts))]
        from scipy.special import expit

        weights, intercepts, slopes, offsets = self._folded
        decisions = self._vectorizer.transform(list(texts)) @ weights + intercepts
        # sklearn's _SigmoidCalibration: p = expit(-(a * d + b)), averaged over the calibrated classifiers
        return [float(p) for p in expit(-(slopes * decisions + offsets)).mean(axis=1)]


def classic(spec: BackendSpec, device: DeviceInfo) -> SafetyBackend:
    """`model`: the folder holding jailguard's ONNX model."""
    return SafetyBackend(spec, device, ProfanityCheck(), JailguardInjection(spec.model))


def transformers_safety(spec: BackendSpec, device: DeviceInfo) -> SafetyBackend:
    """`model`: a toxicity text-classification model; `options.injection_model_dir`: jailguard's folder."""
    options = dict(spec.options)
    toxicity = TransformersClassifier(spec.model, device, options.get("toxic_label"))
    injection_dir = options.get("injection_model_dir")
    injection = JailguardInjection(injection_dir) if injection_dir else None
    return SafetyBackend(spec, device, toxicity, injection)
