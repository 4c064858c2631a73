"""Regression: the squared-error and Huber losses against PyTorch (float64, values and gradients, and
a whole network's parameter gradients), caviar.Regressor on diabetes against RidgeCV, its conventions
(R² score, the target mapped back, partial_fit's loss curve), ONNX, and one-line errors."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.datasets import load_diabetes
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split

from caviar import Regressor
from caviar.errors import DataError
from caviar.nn.losses import LOSSES, huber, squared_error
from caviar.nn.network import Architecture, backward, forward, init_params

X, y = load_diabetes(return_X_y=True)


@pytest.mark.parametrize("name", ["squared_error", "huber"])
def test_loss_and_gradient_match_torch(name):
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(3, 17, 1)) * 2
    target = rng.normal(size=17)
    loss, grad = (squared_error if name == "squared_error" else huber)(pred, target)
    for k in range(3):
        p = torch.tensor(pred[k, :, 0], dtype=torch.float64, requires_grad=True)
        t = torch.tensor(target, dtype=torch.float64)
        ref = torch.nn.MSELoss()(p, t) if name == "squared_error" else torch.nn.HuberLoss(delta=1.0)(p, t)
        ref.backward()
        assert abs(loss[k] - ref.item()) < 1e-6
        np.testing.assert_allclose(grad[k, :, 0], p.grad.numpy(), atol=1e-6)
    got_loss, acc, got_grad = LOSSES[name](pred.copy(), target)
    np.testing.assert_array_equal(got_loss, loss)
    assert np.isnan(acc).all()


@pytest.mark.parametrize("batchnorm", [False, True])
def test_network_gradients_under_squared_error_match_torch(batchnorm):
    arch = Architecture(5, 1, (7,), "tanh", batchnorm)
    params, state = init_params(arch, [np.random.default_rng(1)], np.float64)
    rng = np.random.default_rng(2)
    xb, yb = rng.normal(size=(12, 5)), rng.normal(size=12)
    out, caches, _ = forward(arch, params, state, xb, train=True, bn_momentum=np.array([0.1]))
    _, dout = squared_error(out, yb)
    grads = backward(arch, params, caches, dout)
    W0 = torch.tensor(params["dense0.W"][0], requires_grad=True)
    Wo = torch.tensor(params["out.W"][0], requires_grad=True)
    bo = torch.tensor(params["out.b"][0, 0], requires_grad=True)
    z = torch.tensor(xb) @ W0
    if batchnorm:
        g = torch.tensor(params["bn0.gamma"][0, 0], requires_grad=True)
        b = torch.tensor(params["bn0.beta"][0, 0], requires_grad=True)
        z = torch.nn.functional.batch_norm(z, None, None, g, b, training=True, eps=1e-5)
    else:
        b0 = torch.tensor(params["dense0.b"][0, 0], requires_grad=True)
        z = z + b0
    pred = (torch.tanh(z) @ Wo + bo)[:, 0]
    torch.nn.MSELoss()(pred, torch.tensor(yb)).backward()
    np.testing.assert_allclose(grads["dense0.W"][0], W0.grad.numpy(), atol=1e-6)
    np.testing.assert_allclose(grads["out.W"][0], Wo.grad.numpy(), atol=1e-6)
    np.testing.assert_allclose(grads["out.b"][0, 0], bo.grad.numpy(), atol=1e-6)
    if batchnorm:
        np.testing.assert_allclose(grads["bn0.gamma"][0, 0], g.grad.numpy(), atol=1e-6)
    else:
        np.testing.assert_allclose(grads["dense0.b"][0, 0], b0.grad.numpy(), atol=1e-6)


def test_regressor_beats_ridgecv_on_diabetes():
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0)
    ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(Xtr, ytr).score(Xte, yte)
    reg = Regressor(hidden=(64,), epochs=60, batchnorm=False, dropout=0.3, random_state=0, dtype="float32").fit(
        Xtr, ytr
    )
    r2 = reg.score(Xte, yte)
    assert r2 > ridge, (r2, ridge)
    assert r2 == pytest.approx(r2_score(yte, reg.predict(Xte)))
    pred = reg.predict(Xte)
    assert pred.dtype == np.float64 and abs(pred.mean() - ytr.mean()) < 0.2 * ytr.std()  # mapped back
    np.testing.assert_allclose(reg.target_scaler_.mean, [ytr.mean()])
    assert reg.n_iter_ == 60 and len(reg.loss_curve_) == 60


def test_huber_option_and_partial_fit_keeps_the_loss_curve():
    reg = Regressor(hidden=(16,), loss="huber", batchnorm=False, random_state=0)
    for _ in range(3):
        reg.partial_fit(X, y)
    assert len(reg.loss_curve_) == 3 and reg.n_iter_ == 3
    assert reg.loss_curve_[-1] < reg.loss_curve_[0]


@pytest.mark.parametrize("batchnorm", [False, True])
def test_regressor_onnx_matches(batchnorm):
    reg = Regressor(hidden=(16, 8), activation="leaky_relu", batchnorm=batchnorm, epochs=5, random_state=0).fit(X, y)
    session = ort.InferenceSession(reg.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"X": X.astype(np.float32)})[0]
    np.testing.assert_allclose(got, reg.predict(X), rtol=1e-5, atol=1e-5 * np.abs(y).max())


def test_bad_targets_are_one_line():
    with pytest.raises(DataError, match="Regressor needs a numeric target; y holds text \\('a'\\)"):
        Regressor(epochs=1).fit(X[:4], np.array(["a", "b", "c", "d"]))
    with pytest.raises(DataError, match="y holds text"):
        Regressor(epochs=1).fit(X[:4], np.array([1.0, "b", 2.0, 3.0], dtype=object))
    with pytest.raises(ValueError, match="loss"):
        Regressor(loss="hinge", epochs=1).fit(X, y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
@pytest.mark.parametrize("make", ["Classifier", "Regressor"])
def test_check_estimator_with_default_parameters(make):
    """No adjustment: predictions are row-order and subset invariant (evaluated in float64)."""
    from sklearn.utils.estimator_checks import check_estimator

    import caviar

    results = check_estimator(getattr(caviar, make)(), on_fail=None)
    assert len(results) > 40
    skipped = {"check_array_api_input"}  # scikit-learn skips it without SCIPY_ARRAY_API=1
    bad = {
        r["check_name"]: repr(r["exception"])
        for r in results
        if r["status"] != "passed" and r["check_name"] not in skipped
    }
    assert not bad, bad
