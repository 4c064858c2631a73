"""Batch norm under per-sample weights: the batch statistics are weighted means, so that a weight of
2 counts a row twice and a weight of 0 removes it, as in the weighted loss (caviar.nn.losses).

Used by ``network.forward`` only when training with sample weights (the estimators' ``sample_weight``
and ``class_weight``); unweighted training never comes here. numpy passes on either backend: a
weighted fit is a single model, not the population's hot loop.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class WeightedBNCache(NamedTuple):
    """What ``batchnorm_backward_weighted`` needs: centred z, 1/sigma, gamma, normalized weights (1, B, 1)."""

    zc: np.ndarray
    inv: np.ndarray
    gamma: np.ndarray
    wn: np.ndarray


def batchnorm_forward_weighted(
    z: np.ndarray, gamma: np.ndarray, beta: np.ndarray, w: np.ndarray, eps: float
) -> tuple[np.ndarray, WeightedBNCache, np.ndarray | None, np.ndarray | None]:
    """Training-mode batch norm of z (K, B, F) with sample weights w (B,): mean and (biased) variance
    are sum(w .) / sum(w). Returns (out, cache, batch mean, unbiased variance) for the running
    averages; the unbiased variance uses frequency weights, var W / (W - 1) with W = sum(w) (PyTorch's
    n / (n - 1) when every weight is 1), var itself when W <= 1. When every weight is zero the batch
    says nothing: uniform weights normalize it (its gradients are zero anyway) and the statistics
    returned are None (the running averages stay)."""
    w = np.asarray(w, dtype=np.float64)
    total = float(w.sum())
    B = z.shape[1]
    wn64 = w / total if total > 0 else np.full(B, 1.0 / B)
    wn = wn64.astype(z.dtype).reshape(1, B, 1)
    mu = np.add.reduce(z * wn, axis=1, keepdims=True)
    zc = z - mu
    var = np.add.reduce(zc * zc * wn, axis=1, keepdims=True)
    inv = 1.0 / np.sqrt(var + eps)
    out = zc * (gamma * inv) + beta
    if total <= 0:
        return out, WeightedBNCache(zc, inv, gamma, wn), None, None
    unbiased = var * (total / (total - 1.0)) if total > 1.0 else var
    return out, WeightedBNCache(zc, inv, gamma, wn), mu, unbiased.astype(z.dtype, copy=False)


def batchnorm_backward_weighted(
    dy: np.ndarray, cache: WeightedBNCache, dgamma_out: np.ndarray | None = None, dbeta_out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dz, dgamma, dbeta) of ``batchnorm_forward_weighted``: with xhat = zc inv and wn = w / sum(w),
    dz = gamma inv (dy - wn sum(dy) - wn xhat sum(dy xhat)); every weight 1 gives the usual batch norm
    gradient (wn = 1 / B)."""
    zc, inv, gamma, wn = cache
    dbeta = np.add.reduce(dy, axis=1, keepdims=True, out=dbeta_out)
    dgamma = np.add.reduce(dy * zc, axis=1, keepdims=True, out=dgamma_out)
    dgamma *= inv
    dz = (gamma * inv) * (dy - wn * dbeta - wn * zc * (inv * dgamma))
    return dz, dgamma, dbeta
