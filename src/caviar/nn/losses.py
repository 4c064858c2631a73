"""Softmax output with cross-entropy, fused so that the gradient is simply (y_hat - y) / B."""

from __future__ import annotations

import numpy as np


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
    logp = log_softmax(logits)
    rows = np.arange(B)
    if np.ndim(y) == 1:  # shared labels: one fancy index for every member
        picked = logp[:, rows, y]
    else:
        picked = logp[np.arange(K)[:, None], rows, y]
    loss = -np.add.reduce(picked, axis=1) / B
    grad = np.exp(logp, out=logp)
    if np.ndim(y) == 1:
        grad[:, rows, y] -= 1.0
    else:
        grad[np.arange(K)[:, None], rows, y] -= 1.0
    grad /= B
    return loss, grad


def accuracy(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fraction of correct argmax predictions per member, (K,)."""
    return (logits.argmax(axis=-1) == y).mean(axis=-1)
