"""Softmax output with cross-entropy, fused so that the gradient is simply (y_hat - y) / B."""

from __future__ import annotations

import numpy as np

from caviar.backend import Backend
from caviar.nn import kernels


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p = z - max - log(sum(exp(z - max))): finite for logits of any size."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities along the last axis."""
    return np.exp(log_softmax(logits))


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean cross-entropy per member and its gradient with respect to the logits.

    ``logits`` is (K, B, C); ``y`` holds integer labels, (B,) shared or (K, B). Returns
    (loss of shape (K,), dlogits = (softmax - onehot) / B of shape (K, B, C)).
    """
    K, B, _ = logits.shape
    if B == 0:
        raise ValueError("softmax_cross_entropy needs at least one sample")
    logp = log_softmax(logits)
    index = (slice(None), np.arange(B), y) if np.ndim(y) == 1 else (np.arange(K)[:, None], np.arange(B), y)
    picked = logp[index]  # log p of each sample's label, (K, B)
    # Summed in float64, in batch order (a cumulative sum): numpy's reductions pick their order of
    # summation from the array's shape (pairwise for one row, row-wise vectors for several), and a
    # member's reported loss must not depend on the population, or the slice of it, it trains in.
    # The gradient below does not use it.
    loss = -(np.cumsum(picked, axis=1, dtype=np.float64)[:, -1] / B)
    grad = np.exp(logp, out=logp)
    grad[index] -= 1.0
    grad /= B
    return loss, grad


def accuracy(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fraction of correct argmax predictions per member, (K,)."""
    return (logits.argmax(axis=-1) == y).mean(axis=-1)


def loss_and_accuracy(
    logits: np.ndarray, y: np.ndarray, backend: Backend = Backend.NUMPY
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(loss (K,), accuracy (K,), dlogits) of ``softmax_cross_entropy`` and ``accuracy``, labels (B,)
    shared or (K, B). With the numba backend one fused pass that overwrites ``logits`` with dlogits
    (so pass logits that are the caller's to lose); the values agree with numpy's to rounding."""
    if backend.fused:
        return kernels.softmax_cross_entropy_(logits, y)
    loss, dlogits = softmax_cross_entropy(logits, y)
    return loss, accuracy(logits, y), dlogits
