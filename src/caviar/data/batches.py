"""Mini-batches: index lists drawn afresh each epoch from the population's shared data generator.

Batch norm cannot normalize a batch of one in training (its variance is zero), so a last batch of
one joins the previous batch: n = 129 with batch size 64 gives batches of 64 and 65.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from caviar.errors import DataError


def minibatch_indices(
    n: int, batch_size: int, rng: np.random.Generator | None = None, shuffle: bool = True
) -> list[np.ndarray]:
    """Split ``range(n)`` into batches of ``batch_size``; a last batch of one joins the previous batch.

    With ``shuffle`` the order is a fresh permutation from ``rng`` on each call (call once per epoch);
    without it the batches are in order. Every index appears exactly once. ``batch_size == 1``
    (plain stochastic gradient descent) is allowed and gives batches of one.
    """
    n, batch_size = int(n), int(batch_size)
    if n < 2:
        raise DataError(f"need at least 2 training samples for mini-batches, got {n}")
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    if shuffle:
        if rng is None:
            raise DataError("shuffled mini-batches need a numpy Generator (caviar.seeding.data_rng(seed))")
        order = rng.permutation(n)
    else:
        order = np.arange(n)
    starts = list(range(0, n, batch_size))
    if batch_size > 1 and n - starts[-1] == 1:
        starts.pop()
    ends = starts[1:] + [n]
    return [order[s:e] for s, e in zip(starts, ends, strict=True)]


def iterate_minibatches(
    X: np.ndarray, y: np.ndarray | None, indices: list[np.ndarray]
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yield ``(X[idx], y[idx])`` for each batch: views for in-order runs, copies otherwise.

    Samples are on axis 0 of ``X`` and ``y``; ``y`` may be None (prediction).
    """
    for idx in indices:
        sel = _as_slice(idx)
        yield X[sel], (None if y is None else y[sel])


def _as_slice(idx: np.ndarray) -> slice | np.ndarray:
    """A slice when ``idx`` is a contiguous ascending run (so indexing makes a view, not a copy)."""
    if len(idx) and idx[-1] - idx[0] + 1 == len(idx) and (len(idx) == 1 or bool(np.all(np.diff(idx) == 1))):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx
