"""Layers as forward/backward pure functions over arrays with the population axis K first.

Shapes: activations (K, B, F); a shared input may be (B, F) and broadcasts over K. Dense weights
(K, n_in, n_out), biases and batch-norm vectors (K, 1, F), per-member hyperparameters (K, 1, 1).
Backward functions take the cache their forward returned; nothing is stored on objects. These are
the engine's numpy passes (in place on arrays the engine made itself); the out-of-place textbook
versions the tests check them against live in tests/reference_layers.py.
"""

from __future__ import annotations

import numpy as np

BN_EPS = 1e-5
LEAKY_SLOPE = 0.01


def dense_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """z = x W (+ b). ``x`` is (K, B, n_in) or a shared (B, n_in)."""
    z = np.matmul(x, W)
    if b is not None:
        z += b
    return z


def dense_backward(
    dz: np.ndarray,
    x: np.ndarray,
    W: np.ndarray,
    need_dx: bool = True,
    *,
    need_db: bool = True,
    dW_out: np.ndarray | None = None,
    db_out: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Return (dx, dW, db) for z = x W + b; dx is skipped for the input layer, db (None) for a
    layer without bias (batch norm follows it).

    ``dW_out`` / ``db_out`` let the caller receive the gradients in place (views of one flat
    gradient buffer, so that the optimizer can update every parameter in a few passes).
    """
    xt = x.T if x.ndim == 2 else x.transpose(0, 2, 1)
    dW = np.matmul(xt, dz, out=dW_out)
    db = np.add.reduce(dz, axis=1, keepdims=True, out=db_out) if need_db else None
    dx = np.matmul(dz, W.transpose(0, 2, 1)) if need_dx else None
    return dx, dW, db


def batchnorm_eval(
    z: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float = BN_EPS
) -> np.ndarray:
    """Normalize z with the running statistics (evaluation mode)."""
    scale = gamma / np.sqrt(var + eps)
    return z * scale + (beta - mean * scale)


def _mean_over_batch(a: np.ndarray) -> np.ndarray:
    """``a.mean(axis=1, keepdims=True)`` without numpy's Python-level wrapper (same bits): on the
    engine's small arrays that wrapper costs as much as the sum."""
    total = np.add.reduce(a, axis=1, keepdims=True)
    return np.true_divide(total, a.shape[1], out=total)


def batchnorm_forward_(
    z: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = BN_EPS
) -> tuple[np.ndarray, tuple, np.ndarray, np.ndarray]:
    """Training-mode batch norm that overwrites ``z`` (with z - mu): 5 passes over the batch.

    Returns (out, cache, batch mean, unbiased batch variance): the last two feed the running
    averages. The variance is two-pass, mean((z - mu)^2), as PyTorch computes it. For the
    engine's own fresh pre-activations only. The cache holds the centred z and 1/sigma
    rather than xhat: ``batchnorm_backward_`` folds 1/sigma into per-feature factors, which saves
    the pass that would scale the whole batch by it.
    """
    n = z.shape[1]
    if n < 2:
        raise ValueError("batch norm needs at least 2 samples per batch in training")
    mu = _mean_over_batch(z)
    zc = np.subtract(z, mu, out=z)
    out = np.multiply(zc, zc)
    var = _mean_over_batch(out)
    inv = 1.0 / np.sqrt(var + eps)
    np.multiply(zc, gamma * inv, out=out)
    out += beta
    return out, (zc, inv, gamma), mu, var * (n / (n - 1))


def batchnorm_backward_(
    dy: np.ndarray, cache: tuple, dgamma_out: np.ndarray | None = None, dbeta_out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dz, dgamma, dbeta) of ``batchnorm_forward_`` from its cache, overwriting ``dy`` with dz.

    With zc = z - mu and xhat = zc inv: dgamma = inv sum(dy zc), and
    dz = (gamma inv) (dy - dbeta / n - zc (inv dgamma / n)): 5 passes over the batch, one temporary.
    dgamma and dbeta may be written straight into the caller's gradient buffers.
    """
    zc, inv, gamma = cache
    n = dy.shape[1]
    dbeta = np.add.reduce(dy, axis=1, keepdims=True, out=dbeta_out)
    tmp = np.multiply(dy, zc)
    dgamma = np.add.reduce(tmp, axis=1, keepdims=True, out=dgamma_out)
    dgamma *= inv
    np.multiply(zc, inv * dgamma / n, out=tmp)
    dy -= dbeta / n
    dy -= tmp
    dy *= gamma * inv
    return dy, dgamma, dbeta


def update_running(running: np.ndarray, batch: np.ndarray, momentum: np.ndarray) -> np.ndarray:
    """Exponentially weighted average, PyTorch's convention: (1 - m) running + m batch."""
    return (1.0 - momentum) * running + momentum * batch


def activation_forward_(z: np.ndarray, kind: str) -> np.ndarray:
    """The activation g(z) computed in place in ``z``; returns ``z``."""
    if kind == "relu":
        return np.maximum(z, 0.0, out=z)
    if kind == "leaky_relu":
        return np.multiply(z, LEAKY_SLOPE, out=z, where=~(z > 0))
    if kind == "tanh":
        return np.tanh(z, out=z)
    if kind == "sigmoid":
        from scipy.special import expit  # imported on first use: scipy.special costs start-up

        return expit(z, out=z)
    raise ValueError(f"unknown activation {kind!r}")


def activation_backward_(da: np.ndarray, a: np.ndarray, kind: str) -> np.ndarray:
    """dz = da * g'(z) from the output ``a`` alone, in place in ``da``; returns ``da``.

    The output suffices: for relu and leaky relu, a > 0 exactly where z > 0, so the input z need
    not be kept (the forward pass computes the activation in place over it).
    """
    if kind == "relu":
        return np.multiply(da, a > 0, out=da)
    if kind == "leaky_relu":
        return np.multiply(da, LEAKY_SLOPE, out=da, where=~(a > 0))
    if kind == "tanh":
        return np.multiply(da, 1.0 - a * a, out=da)
    if kind == "sigmoid":
        return np.multiply(da, a * (1.0 - a), out=da)
    raise ValueError(f"unknown activation {kind!r}")


def dropout_mask(
    shape: tuple[int, int],
    rates: np.ndarray,
    rngs: list[np.random.Generator],
    dtype: np.dtype,
    widths: np.ndarray | None = None,
) -> np.ndarray | None:
    """Inverted-dropout masks (K, B, F): kept units scaled by 1 / (1 - rate), one stream per member.

    Returns None when no member drops anything, so the common case costs nothing. ``widths`` (K,):
    members padded to F (``caviar.nn.padding``) draw their masks at their own width, the same
    random numbers as alone, and get zeros on their padding.
    """
    flat = np.asarray(rates).reshape(-1)
    if not np.any(flat > 0):
        return None
    dtype = np.dtype(dtype)
    B, F = shape
    mask = np.empty((len(flat), B, F), dtype=dtype)
    # One buffer for every member's uniforms and one for the kept units: no temporaries per member (a
    # step of a small population drew its masks in more time than its forward matmuls took).
    uniforms = np.empty(B * F)
    keep = np.empty(B * F, dtype=bool)
    for k, (rate, rng) in enumerate(zip(flat, rngs, strict=True)):
        if rate > 0:
            w = F if widths is None else int(widths[k])
            u = uniforms[: B * w].reshape(B, w)
            rng.random(out=u)  # the member's stream, exactly the numbers rng.random((B, w)) gives
            kept = np.greater_equal(u, rate, out=keep[: B * w].reshape(B, w))
            np.multiply(kept, dtype.type(1.0 / (1.0 - rate)), out=mask[k, :, :w])  # 0 or 1 / (1 - rate)
            mask[k, :, w:] = 0.0
        else:
            mask[k] = 1.0
    return mask
