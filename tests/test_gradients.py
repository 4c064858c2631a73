"""Gradient checks of the engine: analytic backward passes against float64 central differences.

Every layer's backward, the fused softmax cross-entropy and whole K-member networks (batch norm on
and off, dropout with masks fixed by re-seeding) are compared with (f(p + h) - f(p - h)) / 2h.
The relative error ||analytic - numeric|| / (||analytic|| + ||numeric||) must stay below 1e-6.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import reference_layers as ref
from caviar.backend import Backend
from caviar.nn import layers
from caviar.nn.losses import log_softmax, softmax_cross_entropy
from caviar.nn.network import Architecture, backward, forward, init_params

#: Every test here runs on both engine paths (numba kernels, numpy passes): see conftest.py.
pytestmark = pytest.mark.usefixtures("engine_path")

H = 1e-6
TOL = 1e-6


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    num = np.linalg.norm(np.ravel(a) - np.ravel(b))
    den = np.linalg.norm(np.ravel(a)) + np.linalg.norm(np.ravel(b))
    return 0.0 if den == 0 else float(num / den)


def numeric_grad(f: Callable[[], float], x: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
    """Central differences of f() with respect to x (perturbed in place), at ``index`` (flat) or all."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    assert np.shares_memory(flat, x)
    for i in range(flat.size) if index is None else index:
        old = flat[i]
        flat[i] = old + H
        fp = f()
        flat[i] = old - H
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * H)
    return grad


def check(analytic: np.ndarray, f: Callable[[], float], x: np.ndarray, max_elems: int | None = None) -> None:
    """Compare ``analytic`` with central differences, on every element or a random subset."""
    assert analytic.shape == x.shape
    if max_elems is not None and x.size > max_elems:
        index = np.random.default_rng(0).choice(x.size, max_elems, replace=False)
        num = numeric_grad(f, x, index)
        err = rel_error(analytic.reshape(-1)[index], num.reshape(-1)[index])
    else:
        num = numeric_grad(f, x)
        err = rel_error(analytic, num)
    assert err < TOL, f"relative error {err:.3e}"


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shared_input", [True, False])
def test_dense_backward(shared_input: bool) -> None:
    rng = np.random.default_rng(1)
    K, B, F, O = 3, 5, 4, 6
    x = rng.standard_normal((B, F) if shared_input else (K, B, F))
    W = rng.standard_normal((K, F, O))
    b = rng.standard_normal((K, 1, O))
    R = rng.standard_normal((K, B, O))  # L = sum(z * R), so dz = R

    def loss() -> float:
        return float(np.sum(layers.dense_forward(x, W, b) * R))

    dx, dW, db = layers.dense_backward(R, x, W, need_dx=True)
    if shared_input:
        # the shared input feeds every member: its gradient is the sum over K
        dx = dx.sum(axis=0)
    check(dx, loss, x)
    check(dW, loss, W)
    check(db, loss, b)
    assert db.shape == (K, 1, O) and dW.shape == (K, F, O)
    assert layers.dense_backward(R, x, W, need_dx=False)[0] is None


def test_batchnorm_backward_train_mode() -> None:
    rng = np.random.default_rng(2)
    K, B, F = 3, 7, 4
    z = rng.standard_normal((K, B, F)) * 3 + 1
    gamma = rng.standard_normal((K, 1, F))
    beta = rng.standard_normal((K, 1, F))
    R = rng.standard_normal((K, B, F))

    def loss() -> float:
        return float(np.sum(ref.batchnorm_forward(z, gamma, beta)[0] * R))

    out, cache, mu, var_unbiased = ref.batchnorm_forward(z, gamma, beta)
    dz, dgamma, dbeta = ref.batchnorm_backward(R, cache)
    check(dz, loss, z)
    check(dgamma, loss, gamma)
    check(dbeta, loss, beta)
    # the statistics it returns: batch mean and unbiased (n / (n - 1)) two-pass variance
    np.testing.assert_allclose(mu, z.mean(axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(var_unbiased, z.var(axis=1, ddof=1, keepdims=True), rtol=1e-12)
    xhat = (z - mu) / np.sqrt(z.var(axis=1, keepdims=True) + layers.BN_EPS)
    np.testing.assert_allclose(out, gamma * xhat + beta, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batchnorm_forward", [ref.batchnorm_forward, layers.batchnorm_forward_])
def test_batchnorm_rejects_batch_of_one(batchnorm_forward) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        batchnorm_forward(np.ones((1, 1, 3)), np.ones((1, 1, 3)), np.zeros((1, 1, 3)))


@pytest.mark.parametrize("kind", ["relu", "leaky_relu", "tanh", "sigmoid"])
def test_activation_backward(kind: str) -> None:
    rng = np.random.default_rng(3)
    z = rng.standard_normal((2, 6, 5)) * 2
    if kind in ("relu", "leaky_relu"):
        z = np.where(np.abs(z) < 0.1, 0.5, z)  # stay away from the kink at 0
    R = rng.standard_normal(z.shape)

    def loss() -> float:
        return float(np.sum(ref.activation_forward(z, kind) * R))

    a = ref.activation_forward(z, kind)
    check(ref.activation_backward(R, z, a, kind), loss, z)


def test_sigmoid_is_stable_for_large_inputs() -> None:
    z = np.array([-1e4, -50.0, 0.0, 50.0, 1e4])
    a = ref.activation_forward(z, "sigmoid")
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(
        a, [0.0, 1 / (1 + np.exp(50.0)), 0.5, 1 / (1 + np.exp(-50.0)), 1.0], rtol=1e-12, atol=1e-15
    )  # 0.5 (1 + tanh(z/2)) underflows to 0 below z ~ -37


def test_unknown_activation_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown activation"):
        ref.activation_forward(np.ones(3), "swish")


def test_dropout_mask_is_inverted_and_per_member() -> None:
    rates = np.array([0.0, 0.25, 0.5])
    rngs = [np.random.default_rng(10 + k) for k in range(3)]
    mask = layers.dropout_mask((400, 50), rates, rngs, np.dtype(np.float64))
    assert mask.shape == (3, 400, 50)
    assert np.all(mask[0] == 1.0)
    for k, rate in enumerate(rates[1:], start=1):
        values = set(np.unique(mask[k]).tolist())
        assert values == {0.0, 1.0 / (1.0 - rate)}
        assert abs((mask[k] == 0).mean() - rate) < 0.02
        assert abs(mask[k].mean() - 1.0) < 0.03  # inverted dropout keeps the expectation
    # member k's mask comes from its own generator: the same seed gives the same mask
    again = layers.dropout_mask((400, 50), rates, [np.random.default_rng(10 + k) for k in range(3)], np.float64)
    np.testing.assert_array_equal(mask, again)
    assert layers.dropout_mask((4, 5), np.zeros(3), rngs, np.dtype(np.float64)) is None


# ---------------------------------------------------------------------------------------------
# Softmax cross-entropy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_member_labels", [False, True])
def test_softmax_cross_entropy_gradient(per_member_labels: bool) -> None:
    rng = np.random.default_rng(4)
    K, B, C = 3, 6, 5
    logits = rng.standard_normal((K, B, C)) * 3
    y = rng.integers(0, C, size=(K, B) if per_member_labels else B)

    def loss() -> float:
        return float(softmax_cross_entropy(logits, y)[0].sum())

    value, dlogits = softmax_cross_entropy(logits, y)
    assert value.shape == (K,)
    check(dlogits, loss, logits)
    # the definition: mean over the batch of -log softmax at the label
    yk = np.broadcast_to(y, (K, B))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = -np.log(np.take_along_axis(p, yk[..., None], -1)[..., 0]).mean(axis=1)
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    np.testing.assert_allclose(dlogits, (p - np.eye(C)[yk]) / B, rtol=1e-10, atol=1e-15)


def test_log_softmax_finite_for_huge_logits() -> None:
    z = np.array([[[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]]])
    lp = log_softmax(z)
    assert np.all(np.isfinite(lp))
    np.testing.assert_allclose(lp[0, 0], [0.0, -2e4, -1e4])
    np.testing.assert_allclose(lp[0, 1], [-np.log(3.0)] * 3)


# ---------------------------------------------------------------------------------------------
# Whole networks
# ---------------------------------------------------------------------------------------------

DROPOUT = np.array([0.0, 0.3, 0.5])


@pytest.mark.parametrize("batchnorm", [True, False])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("per_member_input", [False, True])
def test_network_gradient(batchnorm: bool, activation: str, per_member_input: bool, engine_path: Backend) -> None:
    K, B, n_in, C = 3, 8, 5, 4
    arch = Architecture(n_in=n_in, n_out=C, hidden=(6, 5), activation=activation, batchnorm=batchnorm)
    rng = np.random.default_rng(5)
    params, state = init_params(arch, [np.random.default_rng(k) for k in range(K)], np.float64)
    for name in params:  # move BN vectors and biases away from their trivial initial values
        if not name.endswith(".W"):
            params[name] += 0.3 * rng.standard_normal(params[name].shape)
    x = rng.standard_normal((K, B, n_in) if per_member_input else (B, n_in))
    y = rng.integers(0, C, size=B)
    momentum = np.full(K, 0.1)

    def run():
        rngs = [np.random.default_rng(100 + k) for k in range(K)]  # identical masks on every call
        return forward(
            arch, params, state, x, train=True, bn_momentum=momentum, dropout=DROPOUT, rngs=rngs, backend=engine_path
        )

    def loss() -> float:
        return float(softmax_cross_entropy(run()[0], y)[0].sum())

    logits, caches, _ = run()
    assert logits.shape == (K, B, C)
    _, dlogits = softmax_cross_entropy(logits, y)
    grads = backward(arch, params, caches, dlogits, backend=engine_path)
    assert set(grads) == set(params)
    for name, p in params.items():
        assert grads[name].shape == p.shape, name
        check(grads[name], loss, p, max_elems=24)


def test_network_gradient_big_arrays_subset(engine_path: Backend) -> None:
    """Larger layers: a random subset of each array's elements is perturbed."""
    K, B, n_in, C = 3, 16, 40, 10
    arch = Architecture(n_in=n_in, n_out=C, hidden=(32, 24), activation="leaky_relu", batchnorm=True)
    rng = np.random.default_rng(6)
    params, state = init_params(arch, [np.random.default_rng(k) for k in range(K)], np.float64)
    x = rng.standard_normal((B, n_in))
    y = rng.integers(0, C, size=B)

    def run():
        rngs = [np.random.default_rng(7 + k) for k in range(K)]
        return forward(
            arch,
            params,
            state,
            x,
            train=True,
            bn_momentum=np.full(K, 0.1),
            dropout=np.array([0.2, 0.0, 0.1]),
            rngs=rngs,
            backend=engine_path,
        )

    def loss() -> float:
        return float(softmax_cross_entropy(run()[0], y)[0].sum())

    logits, caches, _ = run()
    grads = backward(arch, params, caches, softmax_cross_entropy(logits, y)[1], backend=engine_path)
    for name, p in params.items():
        check(grads[name], loss, p, max_elems=20)


def test_members_are_independent(engine_path: Backend) -> None:
    """The loss of member k depends on member k's parameters only (sum over K never mixes them)."""
    K = 3
    arch = Architecture(n_in=4, n_out=3, hidden=(5,), batchnorm=True)
    params, state = init_params(arch, [np.random.default_rng(k) for k in range(K)], np.float64)
    x = np.random.default_rng(8).standard_normal((6, 4))
    y = np.array([0, 1, 2, 0, 1, 2])
    logits, caches, _ = forward(arch, params, state, x, train=True, bn_momentum=np.full(K, 0.1), backend=engine_path)
    loss, dlogits = softmax_cross_entropy(logits, y)
    dlogits[1] = 0.0  # drop member 1 from the objective
    grads = backward(arch, params, caches, dlogits, backend=engine_path)
    for name, g in grads.items():
        assert np.all(g[1] == 0.0), name
        assert np.any(g[0] != 0.0), name
