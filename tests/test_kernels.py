"""The fused numba kernels against the numpy passes they replace.

The optimizer kernels must match numpy bit for bit (same operations in the same order); batch norm
and the loss sum over the batch in another order, so they match to rounding. Each kernel works on
members independently: the rows it returns cannot depend on the other rows it was given.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import reference_layers as ref
from caviar.backend import NUMBA_AVAILABLE, Backend, default_backend
from caviar.nn import kernels, layers
from caviar.nn.losses import accuracy, softmax_cross_entropy
from caviar.optim.optimizers import Optimizer

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")
DTYPES = (np.float32, np.float64)
TOL = {np.float32: 2e-5, np.float64: 1e-12}


@pytest.fixture(autouse=True)
def _numba_present() -> None:
    assert NUMBA_AVAILABLE, "numba is a dependency: the kernels must be available in the tests"


def bn_forward(z, gamma, beta, activation="relu"):
    """The kernel's forward with neutral running statistics (momentum 0.1)."""
    K, _, F = z.shape
    ones = np.ones((K, 1, F), z.dtype)
    return kernels.batchnorm_activation_forward_(
        z, gamma, beta, layers.BN_EPS, activation, 0 * ones, ones, np.full(K, 0.1)
    )


def bn_inputs(dtype, K=3, B=17, F=12, seed=0):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((K, B, F)) * 3 + 1).astype(dtype)
    gamma = rng.uniform(0.5, 2, (K, 1, F)).astype(dtype)
    beta = rng.standard_normal((K, 1, F)).astype(dtype)
    return z, gamma, beta


def numpy_forward(z, gamma, beta, activation):
    z = z.copy()
    out, cache, mu, var = layers.batchnorm_forward_(z, gamma, beta)
    return layers.activation_forward_(out, activation), cache, mu, var


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_batchnorm_activation_forward_matches_numpy(activation: str, dtype) -> None:
    z, gamma, beta = bn_inputs(dtype)
    rng = np.random.default_rng(9)
    running_mean = rng.standard_normal(gamma.shape).astype(dtype)
    running_var = rng.uniform(0.5, 2, gamma.shape).astype(dtype)
    momentum = np.array([0.1, 0.01, 0.5])
    h_ref, (zc_ref, inv_ref, _), mu_ref, var_ref = numpy_forward(z, gamma, beta, activation)
    m = momentum.astype(dtype).reshape(-1, 1, 1)
    mean_ref = layers.update_running(running_mean, mu_ref, m)
    var_ref = layers.update_running(running_var, var_ref, m)
    z_k = z.copy()
    h, (zc, inv, g), new_mean, new_var = kernels.batchnorm_activation_forward_(
        z_k, gamma, beta, layers.BN_EPS, activation, running_mean, running_var, momentum
    )
    tol = TOL[dtype]
    assert h.dtype == new_mean.dtype == dtype and zc is z_k and g is gamma
    for got, want in ((h, h_ref), (zc, zc_ref), (inv, inv_ref), (new_mean, mean_ref), (new_var, var_ref)):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_batchnorm_activation_backward_matches_numpy(activation: str, dtype) -> None:
    z, gamma, beta = bn_inputs(dtype, seed=1)
    h, cache, _, _ = numpy_forward(z, gamma, beta, activation)
    da = np.random.default_rng(2).standard_normal(h.shape).astype(dtype)
    dz_ref = layers.activation_backward_(da.copy(), h, activation)
    dz_ref, dgamma_ref, dbeta_ref = layers.batchnorm_backward_(dz_ref, cache)
    da_k = da.copy()
    dz, dgamma, dbeta = kernels.batchnorm_activation_backward_(da_k, h, cache, activation)
    assert dz is da_k
    tol = 20 * TOL[dtype]
    for got, want in ((dz, dz_ref), (dgamma, dgamma_ref), (dbeta, dbeta_ref)):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_batchnorm_activation_eval_matches_numpy(activation: str, dtype) -> None:
    z, gamma, beta = bn_inputs(dtype, seed=3)
    rng = np.random.default_rng(4)
    mean = rng.standard_normal(gamma.shape).astype(dtype)
    var = rng.uniform(0.1, 3, gamma.shape).astype(dtype)
    want = ref.activation_forward(layers.batchnorm_eval(z, gamma, beta, mean, var), activation)
    got = kernels.batchnorm_activation_eval_(z.copy(), gamma, beta, mean, var, layers.BN_EPS, activation)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_bias_activation_kernels_match_numpy(activation: str, dtype) -> None:
    z, _, b = bn_inputs(dtype, seed=10)
    h_ref = ref.activation_forward(z + b, activation)
    h = kernels.bias_activation_forward_(z.copy(), b, activation)
    np.testing.assert_allclose(h, h_ref, rtol=TOL[dtype], atol=TOL[dtype])
    da = np.random.default_rng(11).standard_normal(h.shape).astype(dtype)
    dz_ref = layers.activation_backward_(da.copy(), h, activation)
    dz, db = kernels.activation_bias_backward_(da.copy(), h, activation)
    np.testing.assert_allclose(dz, dz_ref, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_allclose(db, dz_ref.sum(axis=1, keepdims=True), rtol=10 * TOL[dtype], atol=10 * TOL[dtype])


def test_batchnorm_kernel_members_are_independent() -> None:
    z, gamma, beta = bn_inputs(np.float32, K=4, seed=5)
    z[2] *= 1e6  # a wild member must not change its neighbours' bits
    together = bn_forward(z.copy(), gamma, beta)
    for k in range(4):
        alone = bn_forward(z[k : k + 1].copy(), gamma[k : k + 1], beta[k : k + 1])
        for a, b in zip(together, alone, strict=True):
            if isinstance(a, tuple):
                continue
            np.testing.assert_array_equal(a[k : k + 1], b)


def test_batchnorm_kernel_refuses_a_batch_of_one() -> None:
    z, gamma, beta = bn_inputs(np.float64, B=1)
    with pytest.raises(ValueError, match="at least 2 samples"):
        bn_forward(z, gamma, beta)


def test_nan_propagates_through_the_batchnorm_kernel() -> None:
    z, gamma, beta = bn_inputs(np.float64)
    z[1, 3, 2] = np.nan
    h = bn_forward(z, gamma, beta)[0]
    assert np.isnan(h[1, :, 2]).all()  # the whole feature's statistics are NaN
    assert np.isfinite(h[0]).all() and np.isfinite(h[2]).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_softmax_cross_entropy_kernel_matches_numpy(scale: float, dtype) -> None:
    rng = np.random.default_rng(6)
    logits = (rng.standard_normal((5, 33, 10)) * scale).astype(dtype)
    y = rng.integers(0, 10, 33)
    loss_ref, grad_ref = softmax_cross_entropy(logits, y)
    acc_ref = accuracy(logits, y)
    loss, acc, grad = kernels.softmax_cross_entropy_(logits.copy(), y)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(loss, loss_ref, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_allclose(grad, grad_ref, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_array_equal(acc, acc_ref)


def test_softmax_kernel_takes_labels_per_member() -> None:
    rng = np.random.default_rng(8)
    logits = rng.standard_normal((3, 20, 5))
    labels = rng.integers(0, 5, (3, 20))
    loss, acc, grad = kernels.softmax_cross_entropy_(logits.copy(), labels)
    loss_ref, grad_ref = softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-12)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(acc, accuracy(logits, labels))


def test_softmax_kernel_breaks_argmax_ties_like_numpy() -> None:
    logits = np.zeros((2, 3, 4))
    logits[0, :, 1] = logits[0, :, 3] = 5.0  # tie between classes 1 and 3: numpy takes 1
    y = np.array([1, 3, 0])
    _, acc, _ = kernels.softmax_cross_entropy_(logits.copy(), y)
    np.testing.assert_array_equal(acc, accuracy(logits, y))
    assert acc[0] == pytest.approx(1 / 3) and acc[1] == pytest.approx(1 / 3)


def test_softmax_kernel_refuses_labels_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"integers in \[0, 4\)"):
        kernels.softmax_cross_entropy_(np.zeros((1, 2, 4)), np.array([0, 4]))


def optimizer_arrays(dtype, K=3, seed=7):
    rng = np.random.default_rng(seed)
    params = {
        "a.W": rng.standard_normal((K, 5, 4)),
        "a.b": rng.standard_normal((K, 1, 4)),
        "out.W": rng.standard_normal((K, 4, 3)),
    }
    params = {n: a.astype(dtype) for n, a in params.items()}
    grads = [{n: rng.standard_normal(a.shape).astype(dtype) for n, a in params.items()} for _ in range(3)]
    hp = {
        "momentum": rng.uniform(0.5, 0.99, K),
        "rho": rng.uniform(0.9, 0.999, K),
        "beta1": rng.uniform(0.8, 0.95, K),
        "beta2": rng.uniform(0.99, 0.9999, K),
        "epsilon": np.full(K, 1e-8),
    }
    return params, grads, hp, rng.uniform(1e-3, 1e-1, K), rng.uniform(1e-4, 1e-2, K)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l2", [False, True])
@pytest.mark.parametrize("kind", ["sgd", "momentum", "nesterov", "rmsprop", "adam"])
def test_optimizer_kernel_matches_numpy_bit_for_bit(kind: str, l2: bool, dtype) -> None:
    params, grads, hp, lr, l2s = optimizer_arrays(dtype)
    decayed = frozenset({"a.W", "out.W"})
    results = {}
    for backend in (Backend.NUMBA, Backend.NUMPY):
        opt = Optimizer(kind, backend)
        p = {n: a.copy() for n, a in params.items()}
        state = opt.init(p)
        for g in grads:  # three steps: momentum's first step and Adam's bias corrections differ
            opt.update(p, {n: a.copy() for n, a in g.items()}, state, lr, hp, l2=l2s if l2 else None, decayed=decayed)
        results[backend] = (p, state.slots)
    (p_k, s_k), (p_n, s_n) = results[Backend.NUMBA], results[Backend.NUMPY]
    for name in params:
        np.testing.assert_array_equal(p_k[name], p_n[name], err_msg=name)
        for slot in s_n:
            np.testing.assert_array_equal(s_k[slot][name], s_n[slot][name], err_msg=f"{slot} {name}")


def test_optimizer_kernel_leaves_the_gradient_alone() -> None:
    params, grads, hp, lr, l2s = optimizer_arrays(np.float64)
    g = {n: a.copy() for n, a in grads[0].items()}
    opt = Optimizer("adam", Backend.NUMBA)
    assert opt.fused_plan(params, g, opt.init(params).slots) is not None  # the kernel runs
    opt.update(params, g, opt.init(params), lr, hp, l2=l2s, decayed=frozenset(params))
    for name in g:
        np.testing.assert_array_equal(g[name], grads[0][name])


def run_python(code: str, kernels_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CAVIAR_KERNELS": kernels_env}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)


TRAINER_BACKEND = (
    "import warnings; warnings.simplefilter('always'); import numpy as np; from caviar.config import TrainConfig;"
    " from caviar.nn.network import Architecture; from caviar.train.trainer import Trainer, hyperparameters_from;"
    " c = TrainConfig(); t = Trainer(Architecture(3, 2, (4,)), c, hyperparameters_from([{}], c), [0], seed=0);"
    " print(t.backend.value, t.optimizer.backend.value)"
)


def test_caviar_kernels_numpy_turns_the_kernels_off() -> None:
    """The environment is read where a trainer is built, and the choice reaches its optimizer."""
    assert run_python(TRAINER_BACKEND, "numpy").stdout.split() == ["numpy", "numpy"]
    assert run_python(TRAINER_BACKEND, "numba").stdout.split() == ["numba", "numba"]


def test_an_unknown_caviar_kernels_value_is_named_in_a_warning() -> None:
    out = run_python(TRAINER_BACKEND, "nmupy")
    assert out.stdout.split() == ["numba", "numba"]
    assert "CAVIAR_KERNELS='nmupy' is neither 'numba' nor 'numpy'" in out.stderr


def test_default_backend_reads_only_the_mapping_it_is_given() -> None:
    assert default_backend({"CAVIAR_KERNELS": "numpy"}) is Backend.NUMPY
    assert default_backend({"CAVIAR_KERNELS": " NumPy "}) is Backend.NUMPY
    assert default_backend({}) is Backend.NUMBA


def test_backend_names_are_checked() -> None:
    assert Backend.of("numpy") is Backend.NUMPY and Backend.of(Backend.NUMBA) is Backend.NUMBA
    with pytest.raises(ValueError, match="backend 'cuda': choose 'numba' or 'numpy'"):
        Backend.of("cuda")


def test_the_numpy_backend_never_builds_a_fused_plan() -> None:
    params, grads, _, _, _ = optimizer_arrays(np.float64)
    opt = Optimizer("adam", Backend.NUMPY)
    assert opt.fused_plan(params, grads[0], opt.init(params).slots) is None
    assert Optimizer("adam").backend is Backend.NUMPY  # the pure default: kernels are asked for explicitly
