"""Token-bounded batches: a `@serve.batch` batch split into forward passes of similar-length items within a padded
token budget (`max_batch_tokens`), the batch settings a replica applies live, and its batch counters."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from deployments.metrics import record_batch
from deployments.spec import BatchSettings


def split_by_token_budget(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Group item indices into sub-batches whose padded size (count x longest) stays within `max_tokens`.

    Items are sorted by length first so similar lengths share a sub-batch (less padding). An item longer than
    the budget on its own still gets a sub-batch of one: it is truncated by the model, never dropped.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        size = max(1, lengths[index])
        if current and max(longest, size) * (len(current) + 1) > max_tokens:
            groups.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, size)
    if current:
        groups.append(current)
    return groups


def apply_batch_settings(batched_method: Any, settings: BatchSettings) -> None:
    """Push new `user_config` batch settings into a `@serve.batch` method."""
    batched_method.set_max_batch_size(settings.max_batch_size)
    batched_method.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)


@dataclass
class BatchStats:
    """Counts of batches a replica ran, so tests and `/v1/models` can see batching happen."""

    batches: int = 0
    items: int = 0
    forward_passes: int = 0
    max_batch_size_seen: int = 0
    sizes: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, batch_size: int, forward_passes: int, waited_s: float | None = None) -> None:
        """One batch; `waited_s`: how long its oldest item waited for it (also exported as Serve metrics)."""
        record_batch(batch_size, waited_s)
        with self._lock:
            self.batches += 1
            self.items += batch_size
            self.forward_passes += forward_passes
            self.max_batch_size_seen = max(self.max_batch_size_seen, batch_size)
            self.sizes[batch_size] += 1

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "batches": self.batches,
                "items": self.items,
                "forward_passes": self.forward_passes,
                "max_batch_size_seen": self.max_batch_size_seen,
                "mean_batch_size": round(self.items / self.batches, 3) if self.batches else 0.0,
                "batch_size_histogram": {str(k): v for k, v in sorted(self.sizes.items())},
            }


def run_in_token_budget(
    items: Sequence[Any],
    lengths: Sequence[int],
    max_tokens: int,
    forward: Callable[[list[Any]], Iterable[Any]],
) -> tuple[list[Any], int]:
    """Run `forward` over token-bounded sub-batches and return outputs in the input order."""
    outputs: list[Any] = [None] * len(items)
    groups = split_by_token_budget(lengths, max_tokens)
    for group in groups:
        for index, out in zip(group, forward([items[i] for i in group]), strict=True):
            outputs[index] = out
    return outputs, len(groups)
