"""Fused loops for the layers' elementwise work (numba), and the wrappers the network calls.

Batch norm (or a dense bias) with its activation, and the softmax cross-entropy, each run as one
loop nest per member instead of a dozen numpy passes over memory; the matmuls stay with BLAS. Each
kernel applies the same operations, in the same order and the same precision per element, as the
numpy code it replaces (``caviar.nn.layers``, ``caviar.nn.losses``); only sums over the batch run
in another order, and the softmax divides by its sum rather than exponentiating the log-softmax, so
results agree to rounding. Kernels release the GIL (the trainer runs slices of a population on
threads), touch only the rows of the members they are given, and are compiled once per dtype and
cached on disk.

The network calls these only when its backend is ``Backend.NUMBA`` (``caviar.backend``).
"""

from __future__ import annotations

import numpy as np

from caviar.backend import kernel

ACT_CODES = {"relu": 0, "leaky_relu": 1, "tanh": 2, "sigmoid": 3}
LEAKY_SLOPE = 0.01


@kernel
def _act(y, code):
    """g(y) for the activation ``code`` (ACT_CODES), in y's precision."""
    if code == 0:
        return y if y > 0 else y * 0
    if code == 1:
        return y if y > 0 else y * type(y)(LEAKY_SLOPE)
    if code == 2:
        return np.tanh(y)
    one = type(y)(1)
    return one / (one + np.exp(-y))


@kernel
def _act_grad(g, a, code):
    """g * act'(z) from the activation's output a (for relu-likes, a > 0 exactly where z > 0)."""
    if code == 0:
        return g if a > 0 else g * 0
    if code == 1:
        return g if a > 0 else g * type(g)(LEAKY_SLOPE)
    one = type(a)(1)
    if code == 2:
        return g * (one - a * a)
    return g * (a * (one - a))


@kernel
def bn_act_forward_(z, gamma, beta, eps, code, h, inv_out, running_mean, running_var, momentum, new_mean, new_var):
    """Training-mode batch norm then the activation, for every member (row of axis 0).

    z (K, B, F) is overwritten with z - mu; h (K, B, F) receives the activation's output and
    inv_out (K, 1, F) 1 / sqrt(var + eps). The running statistics (K, 1, F) move by ``momentum``
    (K,) into new_mean and new_var (PyTorch's convention: the unbiased batch variance).
    """
    K, B, F = z.shape
    dt = z.dtype.type
    n = dt(B)
    one = dt(1)
    unbias = dt(B / (B - 1))
    acc = np.empty(F, z.dtype)
    mu = np.empty(F, z.dtype)
    scale = np.empty(F, z.dtype)
    for k in range(K):
        m = momentum[k]
        keep = one - m
        acc[:] = 0
        for b in range(B):
            for f in range(F):
                acc[f] += z[k, b, f]
        for f in range(F):
            mu[f] = acc[f] / n
            new_mean[k, 0, f] = keep * running_mean[k, 0, f] + m * mu[f]
        acc[:] = 0
        for b in range(B):
            for f in range(F):
                d = z[k, b, f] - mu[f]
                z[k, b, f] = d
                acc[f] += d * d
        for f in range(F):
            var = acc[f] / n
            new_var[k, 0, f] = keep * running_var[k, 0, f] + m * (var * unbias)
            inv = one / np.sqrt(var + eps)
            inv_out[k, 0, f] = inv
            scale[f] = gamma[k, 0, f] * inv
        if code == 0:  # relu in a loop of its own: it vectorizes
            for b in range(B):
                for f in range(F):
                    y = z[k, b, f] * scale[f] + beta[k, 0, f]
                    h[k, b, f] = y if y > 0 else y * 0
        else:
            for b in range(B):
                for f in range(F):
                    h[k, b, f] = _act(z[k, b, f] * scale[f] + beta[k, 0, f], code)


@kernel
def bias_act_forward_(z, b, code):
    """z (K, B, F) becomes act(z + b), b (K, 1, F): a dense layer's bias and activation (no batch norm)."""
    K, B, F = z.shape
    for k in range(K):
        if code == 0:  # relu in a loop of its own: it vectorizes
            for i in range(B):
                for f in range(F):
                    y = z[k, i, f] + b[k, 0, f]
                    z[k, i, f] = y if y > 0 else y * 0
        else:
            for i in range(B):
                for f in range(F):
                    z[k, i, f] = _act(z[k, i, f] + b[k, 0, f], code)


@kernel
def act_bias_backward_(da, h, code, db_out):
    """da (K, B, F), the gradient with respect to h = act(z), becomes dz; db_out (K, 1, F) the bias's."""
    K, B, F = da.shape
    acc = np.empty(F, da.dtype)
    for k in range(K):
        acc[:] = 0
        if code == 0:
            for i in range(B):
                for f in range(F):
                    g = da[k, i, f] if h[k, i, f] > 0 else da[k, i, f] * 0
                    da[k, i, f] = g
                    acc[f] += g
        else:
            for i in range(B):
                for f in range(F):
                    g = _act_grad(da[k, i, f], h[k, i, f], code)
                    da[k, i, f] = g
                    acc[f] += g
        for f in range(F):
            db_out[k, 0, f] = acc[f]


@kernel
def bn_act_eval_(z, gamma, beta, mean, var, eps, code):
    """Evaluation-mode batch norm (running statistics) then the activation, in place in z."""
    K, B, F = z.shape
    scale = np.empty(F, z.dtype)
    shift = np.empty(F, z.dtype)
    for k in range(K):
        for f in range(F):
            scale[f] = gamma[k, 0, f] / np.sqrt(var[k, 0, f] + eps)
            shift[f] = beta[k, 0, f] - mean[k, 0, f] * scale[f]
        for b in range(B):
            for f in range(F):
                z[k, b, f] = _act(z[k, b, f] * scale[f] + shift[f], code)


@kernel
def bn_act_backward_(da, h, zc, inv, gamma, code, dgamma_out, dbeta_out):
    """Backward of ``bn_act_forward_`` from its outputs: da (K, B, F), the gradient with
    respect to h, is overwritten with dz; dgamma_out and dbeta_out (K, 1, F) receive theirs."""
    K, B, F = da.shape
    n = da.dtype.type(B)
    sdy = np.empty(F, da.dtype)
    sdyz = np.empty(F, da.dtype)
    c_mean = np.empty(F, da.dtype)
    c_z = np.empty(F, da.dtype)
    c_out = np.empty(F, da.dtype)
    for k in range(K):
        sdy[:] = 0
        sdyz[:] = 0
        if code == 0:
            for b in range(B):
                for f in range(F):
                    g = da[k, b, f] if h[k, b, f] > 0 else da[k, b, f] * 0
                    da[k, b, f] = g
                    sdy[f] += g
                    sdyz[f] += g * zc[k, b, f]
        else:
            for b in range(B):
                for f in range(F):
                    g = _act_grad(da[k, b, f], h[k, b, f], code)
                    da[k, b, f] = g
                    sdy[f] += g
                    sdyz[f] += g * zc[k, b, f]
        for f in range(F):
            dgamma = sdyz[f] * inv[k, 0, f]
            dgamma_out[k, 0, f] = dgamma
            dbeta_out[k, 0, f] = sdy[f]
            c_mean[f] = sdy[f] / n
            c_z[f] = inv[k, 0, f] * dgamma / n
            c_out[f] = gamma[k, 0, f] * inv[k, 0, f]
        for b in range(B):
            for f in range(F):
                da[k, b, f] = ((da[k, b, f] - c_mean[f]) - zc[k, b, f] * c_z[f]) * c_out[f]


@kernel
def softmax_xent_(logits, y, loss_out, correct_out):
    """Softmax cross-entropy against labels y (1, B) shared by the members, or (K, B) one row each.

    logits (K, B, C) are overwritten with dlogits = (softmax - onehot) / B; loss_out (K,) float64
    receives the mean loss (summed in float64, in batch order), correct_out (K,) the number of
    argmax hits (the first maximum wins, as numpy's argmax). The probabilities are exp(z - max)
    over their sum (numpy's path: exp of the log-softmax): the same values to rounding.
    """
    K, B, C = logits.shape
    n = logits.dtype.type(B)
    one = logits.dtype.type(1)
    shared = y.shape[0] == 1
    for k in range(K):
        total = 0.0
        hits = 0
        row = 0 if shared else k
        for b in range(B):
            label = y[row, b]
            best = 0
            m = logits[k, b, 0]
            for c in range(1, C):
                if logits[k, b, c] > m:
                    m = logits[k, b, c]
                    best = c
            hits += best == label
            s = logits[k, b, 0] * 0
            for c in range(C):
                shifted = logits[k, b, c] - m
                if c == label:
                    total += shifted  # log p(label) = shifted - log(s), finished below
                e = np.exp(shifted)
                logits[k, b, c] = e
                s += e
            total -= np.log(s)
            for c in range(C):  # softmax as exp(shifted) / s: one exp per logit, not two
                p = logits[k, b, c] / s
                if c == label:
                    p -= one
                logits[k, b, c] = p / n
        loss_out[k] = -(total / B)
        correct_out[k] = hits


@kernel
def softmax_xent_weighted_(logits, y, wn, loss_out, correct_out):
    """``softmax_xent_`` with sample weights ``wn`` (B,) float64 already divided by their sum: dlogits =
    (softmax - onehot) wn, loss_out the weighted mean loss, correct_out (K,) float64 the weighted
    fraction of argmax hits."""
    K, B, C = logits.shape
    one = logits.dtype.type(1)
    shared = y.shape[0] == 1
    for k in range(K):
        total = 0.0
        hits = 0.0
        row = 0 if shared else k
        for b in range(B):
            label = y[row, b]
            scale = logits.dtype.type(wn[b])
            best = 0
            m = logits[k, b, 0]
            for c in range(1, C):
                if logits[k, b, c] > m:
                    m = logits[k, b, c]
                    best = c
            if best == label:
                hits += wn[b]
            s = logits[k, b, 0] * 0
            picked = 0.0
            for c in range(C):
                shifted = logits[k, b, c] - m
                if c == label:
                    picked = shifted
                e = np.exp(shifted)
                logits[k, b, c] = e
                s += e
            total += wn[b] * (picked - np.log(s))
            for c in range(C):
                p = logits[k, b, c] / s
                if c == label:
                    p -= one
                logits[k, b, c] = p * scale
        loss_out[k] = -total
        correct_out[k] = hits


# ---------------------------------------------------------------------------------- wrappers
def batchnorm_activation_forward_(
    z: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    activation: str,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    momentum: np.ndarray,
) -> tuple[np.ndarray, tuple, np.ndarray, np.ndarray]:
    """``layers.batchnorm_forward_``, ``activation_forward_`` and both ``update_running`` in one kernel.

    Returns (h, cache, new running mean, new running variance); z (fresh from the matmul) becomes
    z - mu, and the cache (z - mu, 1 / sigma, gamma) is the one ``batchnorm_backward_`` takes.
    ``momentum`` (K,) moves the running statistics, PyTorch's convention.
    """
    K, n, F = z.shape
    if n < 2:
        raise ValueError("batch norm needs at least 2 samples per batch in training")
    h = np.empty_like(z)
    inv, new_mean, new_var = (np.empty((K, 1, F), z.dtype) for _ in range(3))
    m = np.ascontiguousarray(np.asarray(momentum, dtype=z.dtype).reshape(K))
    bn_act_forward_(
        z,
        gamma,
        beta,
        z.dtype.type(eps),
        ACT_CODES[activation],
        h,
        inv,
        running_mean,
        running_var,
        m,
        new_mean,
        new_var,
    )
    return h, (z, inv, gamma), new_mean, new_var


def bias_activation_forward_(z: np.ndarray, b: np.ndarray, activation: str) -> np.ndarray:
    """``z + b`` then the activation, in place in ``z`` (fresh from the matmul); returns z."""
    bias_act_forward_(z, b, ACT_CODES[activation])
    return z


def activation_bias_backward_(
    da: np.ndarray, h: np.ndarray, activation: str, db_out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``layers.activation_backward_`` and the bias gradient (the sum over the batch) in one pass;
    ``da`` becomes dz. Returns (dz, db)."""
    K, _, F = da.shape
    db = np.empty((K, 1, F), da.dtype) if db_out is None else db_out
    act_bias_backward_(da, h, ACT_CODES[activation], db)
    return da, db


def batchnorm_activation_eval_(
    z: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
    activation: str,
) -> np.ndarray:
    """``layers.batchnorm_eval`` then the activation, in place in ``z``; returns z."""
    bn_act_eval_(z, gamma, beta, mean, var, z.dtype.type(eps), ACT_CODES[activation])
    return z


def batchnorm_activation_backward_(
    da: np.ndarray,
    h: np.ndarray,
    cache: tuple,
    activation: str,
    dgamma_out: np.ndarray | None = None,
    dbeta_out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The activation's backward then ``layers.batchnorm_backward_``, in place in ``da``."""
    zc, inv, gamma = cache
    K, _, F = da.shape
    dgamma = np.empty((K, 1, F), da.dtype) if dgamma_out is None else dgamma_out
    dbeta = np.empty((K, 1, F), da.dtype) if dbeta_out is None else dbeta_out
    bn_act_backward_(da, h, zc, inv, gamma, ACT_CODES[activation], dgamma, dbeta)
    return da, dgamma, dbeta


def softmax_cross_entropy_(
    logits: np.ndarray, y: np.ndarray, wn: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``losses.softmax_cross_entropy`` and ``losses.accuracy`` in one pass: labels (B,) shared by
    the members or (K, B), one row each; optional sample weights ``wn`` (B,) float64 already divided
    by their sum (``losses.normalized_weights``): weighted means.

    Returns (loss (K,), accuracy (K,), dlogits); the logits are overwritten with dlogits.
    """
    K, B, C = logits.shape
    if B == 0:
        raise ValueError("softmax_cross_entropy needs at least one sample")
    labels = np.ascontiguousarray(y, dtype=np.int64)
    if labels.shape not in ((B,), (K, B)) or (labels.min() < 0 or labels.max() >= C):
        raise ValueError(f"labels must be ({B},) or ({K}, {B}) integers in [0, {C}); got shape {labels.shape}")
    labels = labels.reshape(-1, B)
    loss = np.empty(K)
    if wn is not None:
        weighted = np.empty(K)
        softmax_xent_weighted_(logits, labels, np.ascontiguousarray(wn, dtype=np.float64), loss, weighted)
        return loss, weighted, logits
    correct = np.empty(K, np.int64)
    softmax_xent_(logits, labels, loss, correct)
    return loss, correct / B, logits
