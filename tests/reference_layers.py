"""Textbook (out-of-place) versions of the layers, the reference the tests check the engine against.

The engine runs ``caviar.nn.layers``' in-place passes or the fused kernels; nothing in caviar calls
these, so they live with the tests. Same shapes and conventions as ``caviar.nn.layers``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from caviar.nn.layers import BN_EPS, LEAKY_SLOPE


def batchnorm_forward(
    z: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = BN_EPS
) -> tuple[np.ndarray, tuple, np.ndarray, np.ndarray]:
    """Normalize z over the batch with its own statistics (training mode).

    Returns (out, cache, batch mean, unbiased batch variance): the last two feed the running
    averages. The variance is two-pass, mean((z - mu)^2), as PyTorch computes it.
    """
    n = z.shape[1]
    if n < 2:
        raise ValueError("batch norm needs at least 2 samples per batch in training")
    mu = z.mean(axis=1, keepdims=True)
    zc = z - mu
    var = np.mean(zc * zc, axis=1, keepdims=True)
    inv = 1.0 / np.sqrt(var + eps)
    xhat = zc * inv
    out = gamma * xhat + beta
    return out, (xhat, inv, gamma), mu, var * (n / (n - 1))


def batchnorm_backward(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (dz, dgamma, dbeta) of the training-mode batch norm."""
    xhat, inv, gamma = cache
    n = dy.shape[1]
    dbeta = dy.sum(axis=1, keepdims=True)
    dgamma = np.sum(dy * xhat, axis=1, keepdims=True)
    dxhat = gamma * dy
    dz = (inv / n) * (n * dxhat - (gamma * dbeta) - xhat * (gamma * dgamma))
    return dz, dgamma, dbeta


def activation_forward(z: np.ndarray, kind: str) -> np.ndarray:
    """Apply the activation g(z)."""
    if kind == "relu":
        return np.maximum(z, 0.0)
    if kind == "leaky_relu":
        return np.where(z > 0, z, LEAKY_SLOPE * z)
    if kind == "tanh":
        return np.tanh(z)
    if kind == "sigmoid":
        return expit(z)  # stable and exact for any z (sigmoid(-50) is 1.9e-22, not 0)
    raise ValueError(f"unknown activation {kind!r}")


def activation_backward(da: np.ndarray, z: np.ndarray, a: np.ndarray, kind: str) -> np.ndarray:
    """Return dz = da * g'(z), using the cached input z or output a, whichever is cheaper."""
    if kind == "relu":
        return da * (z > 0)
    if kind == "leaky_relu":
        return da * np.where(z > 0, 1.0, LEAKY_SLOPE).astype(da.dtype)
    if kind == "tanh":
        return da * (1.0 - a * a)
    if kind == "sigmoid":
        return da * (a * (1.0 - a))
    raise ValueError(f"unknown activation {kind!r}")
