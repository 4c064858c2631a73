"""The losses of the output layer: softmax with cross-entropy (fused so that the gradient is simply
(y_hat - y) / B), squared error and Huber's loss for a regression's linear output.

Each takes optional per-sample weights ``w`` (B,), shared by the members: the loss is then the
weighted mean sum(w l) / sum(w) over the batch (PyTorch's convention for weighted losses, e.g.
``CrossEntropyLoss(weight=...)``), its gradient w (dl) / sum(w); a batch whose weights are all zero
has loss 0 and gradient 0. Without weights the unweighted code runs, unchanged.
"""

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


def normalized_weights(w: np.ndarray, B: int) -> tuple[np.ndarray, float]:
    """(w / sum(w) as float64 (B,), sum(w)); all zeros when the weights sum to zero. One
    ValueError if ``w`` is not (B,)."""
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (B,):
        raise ValueError(f"sample weights must be ({B},), one per sample of the batch; got shape {w.shape}")
    total = float(w.sum())
    return (w / total if total > 0 else np.zeros(B)), total


def softmax_cross_entropy(
    logits: np.ndarray, y: np.ndarray, w: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean cross-entropy per member and its gradient with respect to the logits.

    ``logits`` is (K, B, C); ``y`` holds integer labels, (B,) shared or (K, B); ``w`` optional sample
    weights (B,). Returns (loss of shape (K,), dlogits = (softmax - onehot) / B of shape (K, B, C),
    or (softmax - onehot) w / sum(w) with weights).
    """
    K, B, _ = logits.shape
    if B == 0:
        raise ValueError("softmax_cross_entropy needs at least one sample")
    logp = log_softmax(logits)
    index = (slice(None), np.arange(B), y) if np.ndim(y) == 1 else (np.arange(K)[:, None], np.arange(B), y)
    picked = logp[index]  # log p of each sample's label, (K, B)
    if w is not None:
        wn, _ = normalized_weights(w, B)
        loss = -np.cumsum(picked * wn, axis=1, dtype=np.float64)[:, -1]
        grad = np.exp(logp, out=logp)
        grad[index] -= 1.0
        grad *= wn.astype(grad.dtype)[:, None]
        return loss, grad
    # Summed in float64, in batch order (a cumulative sum): numpy's reductions pick their order of
    # summation from the array's shape (pairwise for one row, row-wise vectors for several), and a
    # member's reported loss must not depend on the population, or the slice of it, it trains in.
    # The gradient below does not use it.
    loss = -(np.cumsum(picked, axis=1, dtype=np.float64)[:, -1] / B)
    grad = np.exp(logp, out=logp)
    grad[index] -= 1.0
    grad /= B
    return loss, grad


def accuracy(logits: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Fraction of correct argmax predictions per member, (K,); with weights w (B,) the weighted fraction."""
    hits = logits.argmax(axis=-1) == y
    if w is None:
        return hits.mean(axis=-1)
    return hits @ normalized_weights(w, logits.shape[1])[0]


def loss_and_accuracy(
    logits: np.ndarray, y: np.ndarray, backend: Backend = Backend.NUMPY, w: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(loss (K,), accuracy (K,), dlogits) of ``softmax_cross_entropy`` and ``accuracy``, labels (B,)
    shared or (K, B), optional sample weights ``w`` (B,). With the numba backend one fused pass that
    overwrites ``logits`` with dlogits (so pass logits that are the caller's to lose); the values
    agree with numpy's to rounding."""
    if backend.fused:
        return kernels.softmax_cross_entropy_(
            logits, y, None if w is None else normalized_weights(w, logits.shape[1])[0]
        )
    acc = accuracy(logits, y, w)
    loss, dlogits = softmax_cross_entropy(logits, y, w)
    return loss, acc, dlogits


# ----------------------------------------------------------------------------------------------
# Regression: a linear output (K, B, 1) and a target (B,) or (K, B), standardized by the caller.


def squared_error(pred: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean squared error per member and its gradient: (loss (K,), dpred = 2 (pred - y) / B (K, B, 1));
    with sample weights ``w`` (B,) the weighted mean and 2 w (pred - y) / sum(w).

    PyTorch's ``MSELoss`` (mean reduction); the loss is summed in float64 in batch order like
    ``softmax_cross_entropy``, so a member's loss does not depend on the population it trains in."""
    K, B, _ = pred.shape
    if B == 0:
        raise ValueError("squared_error needs at least one sample")
    diff = pred[..., 0] - np.asarray(y, dtype=pred.dtype)
    if w is not None:
        wn, _ = normalized_weights(w, B)
        loss = np.cumsum(diff * diff * wn, axis=1, dtype=np.float64)[:, -1]
        return loss, (diff * (2.0 * wn).astype(pred.dtype))[..., None]
    loss = np.cumsum(diff * diff, axis=1, dtype=np.float64)[:, -1] / B
    return loss, (diff * (2.0 / B))[..., None].astype(pred.dtype, copy=False)


def huber(
    pred: np.ndarray, y: np.ndarray, delta: float = 1.0, w: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss per member (PyTorch's ``HuberLoss``: 0.5 d^2 for |d| <= delta, else
    delta (|d| - delta / 2), mean over the batch) and its gradient clip(d, -delta, delta) / B; with
    sample weights ``w`` (B,) the weighted mean and w clip(d, -delta, delta) / sum(w)."""
    K, B, _ = pred.shape
    if B == 0:
        raise ValueError("huber needs at least one sample")
    diff = pred[..., 0] - np.asarray(y, dtype=pred.dtype)
    a = np.abs(diff)
    per = np.where(a <= delta, 0.5 * diff * diff, delta * (a - 0.5 * delta))
    if w is not None:
        wn, _ = normalized_weights(w, B)
        loss = np.cumsum(per * wn, axis=1, dtype=np.float64)[:, -1]
        return loss, (np.clip(diff, -delta, delta) * wn.astype(pred.dtype))[..., None]
    loss = np.cumsum(per, axis=1, dtype=np.float64)[:, -1] / B
    return loss, (np.clip(diff, -delta, delta) / B)[..., None].astype(pred.dtype, copy=False)


def squared_error_loss(
    pred: np.ndarray, y: np.ndarray, backend: Backend = Backend.NUMPY, w: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``squared_error`` in the trainer's form (loss, accuracy, dpred); no accuracy for a continuous target."""
    loss, grad = squared_error(pred, y, w)
    return loss, np.full(len(loss), np.nan), grad


def huber_loss(
    pred: np.ndarray, y: np.ndarray, backend: Backend = Backend.NUMPY, w: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``huber`` (delta 1) in the trainer's form (loss, accuracy, dpred); no accuracy for a continuous target."""
    loss, grad = huber(pred, y, w=w)
    return loss, np.full(len(loss), np.nan), grad


#: The trainer's losses by name: ``f(outputs, y, backend, w=None) -> (loss (K,), accuracy (K,), doutputs)``.
#: ``cross_entropy`` has a fused numba kernel; the regression losses are numpy on both backends
#: (one subtraction and a reduction: nothing to fuse) and report NaN as their accuracy.
LOSSES = {
    "cross_entropy": loss_and_accuracy,
    "squared_error": squared_error_loss,
    "huber": huber_loss,
}
