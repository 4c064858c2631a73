"""scikit-learn's conventions on caviar.Classifier and caviar.Regressor: random_state, sample_weight
(a weighted loss, checked against PyTorch in float64), class_weight, warm_start, predict_log_proba,
verbose, partial_fit's loss curve, and one-line errors for bad weights."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes, load_iris, make_classification
from sklearn.utils.class_weight import compute_class_weight, compute_sample_weight

from caviar import Classifier, Regressor
from caviar.backend import Backend
from caviar.nn.losses import LOSSES, huber, softmax_cross_entropy, squared_error
from caviar.nn.network import Architecture, backward, forward, init_params
from caviar.sklearn_weights import class_weights

X_IRIS, Y_IRIS = load_iris(return_X_y=True)
X_DIAB, Y_DIAB = load_diabetes(return_X_y=True)
SMALL = dict(hidden=(8,), epochs=4, learning_rate=1e-2)


def proba(clf: Classifier) -> np.ndarray:
    return clf.predict_proba(X_IRIS)


# ---------------------------------------------------------------------------------------------
# random_state
# ---------------------------------------------------------------------------------------------


def test_random_state_follows_check_random_state() -> None:
    a, b = (proba(Classifier(**SMALL, random_state=3).fit(X_IRIS, Y_IRIS)) for _ in range(2))
    np.testing.assert_array_equal(a, b)  # an int: the same fit every time
    other = proba(Classifier(**SMALL, random_state=4).fit(X_IRIS, Y_IRIS))
    assert not np.allclose(a, other)
    rs = np.random.RandomState(0)  # an instance: drawn from, so successive fits differ...
    clf = Classifier(**SMALL, random_state=rs)
    first, second = proba(clf.fit(X_IRIS, Y_IRIS)), proba(clf.fit(X_IRIS, Y_IRIS))
    assert not np.allclose(first, second)
    again = proba(Classifier(**SMALL, random_state=np.random.RandomState(0)).fit(X_IRIS, Y_IRIS))
    np.testing.assert_array_equal(first, again)  # ...and the same state gives the same first fit
    g1 = proba(Classifier(**SMALL, random_state=np.random.default_rng(5)).fit(X_IRIS, Y_IRIS))
    g2 = proba(Classifier(**SMALL, random_state=np.random.default_rng(5)).fit(X_IRIS, Y_IRIS))
    np.testing.assert_array_equal(g1, g2)  # a Generator too
    np.random.seed(0)
    n1 = proba(Classifier(**SMALL).fit(X_IRIS, Y_IRIS))
    np.random.seed(0)
    n2 = proba(Classifier(**SMALL).fit(X_IRIS, Y_IRIS))
    np.testing.assert_array_equal(n1, n2)  # None: numpy's global RandomState
    with pytest.raises(ValueError, match="random_state"):
        Classifier(random_state="zero").fit(X_IRIS, Y_IRIS)


def test_seed_is_a_deprecated_alias_of_random_state() -> None:
    with pytest.warns(FutureWarning, match="seed=.* is deprecated.*random_state"):
        old = Classifier(**SMALL, seed=3).fit(X_IRIS, Y_IRIS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = Classifier(**SMALL, random_state=3).fit(X_IRIS, Y_IRIS)
    np.testing.assert_array_equal(proba(old), proba(new))
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="disagree"):
        Regressor(seed=1, random_state=2).fit(X_DIAB, Y_DIAB)


# ---------------------------------------------------------------------------------------------
# Weighted losses and gradients against PyTorch (float64)
# ---------------------------------------------------------------------------------------------

RNG = np.random.default_rng(0)
W_BATCH = np.array([0.0, 2.0, 0.5, 1.0, 3.0, 0.0, 1.5, 0.25, 1.0, 4.0, 0.75, 2.0])


@pytest.mark.parametrize("backend", [Backend.NUMPY, Backend.NUMBA])
def test_weighted_cross_entropy_matches_torch(backend: Backend) -> None:
    logits = RNG.normal(size=(2, 12, 4)) * 3
    y = RNG.integers(0, 4, size=12)
    loss, acc, grad = LOSSES["cross_entropy"](logits.copy(), y, backend, W_BATCH)
    for k in range(2):
        z = torch.tensor(logits[k], requires_grad=True)
        w = torch.tensor(W_BATCH)
        per = torch.nn.functional.cross_entropy(z, torch.tensor(y), reduction="none")
        ref = (w * per).sum() / w.sum()  # PyTorch's convention for a weighted mean loss
        ref.backward()
        assert abs(loss[k] - ref.item()) < 1e-6
        np.testing.assert_allclose(grad[k], z.grad.numpy(), atol=1e-6)
        hits = logits[k].argmax(axis=1) == y
        assert acc[k] == pytest.approx((W_BATCH * hits).sum() / W_BATCH.sum())
    # class weights as sample weights are CrossEntropyLoss(weight=...)
    cw = np.array([1.0, 3.0, 0.5, 2.0])
    loss, _, _ = LOSSES["cross_entropy"](logits.copy(), y, backend, cw[y])
    ref = torch.nn.CrossEntropyLoss(weight=torch.tensor(cw))(torch.tensor(logits[0]), torch.tensor(y))
    assert abs(loss[0] - ref.item()) < 1e-6


def test_weights_of_one_are_the_unweighted_loss() -> None:
    logits = RNG.normal(size=(1, 12, 3))
    y = RNG.integers(0, 3, size=12)
    ones = np.ones(12)
    for fn in (softmax_cross_entropy,):
        (l0, g0), (l1, g1) = fn(logits.copy(), y), fn(logits.copy(), y, ones)
        np.testing.assert_allclose(l1, l0, rtol=1e-12)
        np.testing.assert_allclose(g1, g0, rtol=1e-12, atol=1e-15)
    pred, t = RNG.normal(size=(1, 12, 1)), RNG.normal(size=12)
    for fn in (squared_error, huber):
        (l0, g0), (l1, g1) = fn(pred, t), fn(pred, t, w=ones)
        np.testing.assert_allclose(l1, l0, rtol=1e-12)
        np.testing.assert_allclose(g1, g0, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ["squared_error", "huber"])
def test_weighted_regression_losses_match_torch(name: str) -> None:
    pred = RNG.normal(size=(1, 12, 1)) * 2
    t = RNG.normal(size=12)
    loss, _, grad = LOSSES[name](pred, t, Backend.NUMPY, W_BATCH)
    p = torch.tensor(pred[0, :, 0], requires_grad=True)
    w = torch.tensor(W_BATCH)
    fn = torch.nn.MSELoss(reduction="none") if name == "squared_error" else torch.nn.HuberLoss(reduction="none")
    ref = (w * fn(p, torch.tensor(t))).sum() / w.sum()
    ref.backward()
    assert abs(loss[0] - ref.item()) < 1e-6
    np.testing.assert_allclose(grad[0, :, 0], p.grad.numpy(), atol=1e-6)


@pytest.mark.parametrize("backend", [Backend.NUMPY, Backend.NUMBA])
@pytest.mark.parametrize("batchnorm", [True, False])
def test_weighted_network_gradients_match_torch(backend: Backend, batchnorm: bool) -> None:
    """Every parameter's gradient under sample weights, batch norm's weighted statistics included."""
    arch = Architecture(5, 3, (7, 6), "tanh", batchnorm)
    params, state = init_params(arch, [np.random.default_rng(1)], np.float64)
    xb, y = RNG.normal(size=(12, 5)), RNG.integers(0, 3, size=12)
    logits, caches, new_state = forward(
        arch, params, state, xb, train=True, bn_momentum=np.array([0.1]), backend=backend, sample_weight=W_BATCH
    )
    _, _, dlogits = LOSSES["cross_entropy"](logits, y, backend, W_BATCH)
    grads = backward(arch, params, caches, dlogits, backend=backend)

    t = {n: torch.tensor(a[0], requires_grad=True) for n, a in params.items()}
    w = torch.tensor(W_BATCH)
    a = torch.tensor(xb)
    for i in range(2):
        z = a @ t[f"dense{i}.W"]
        if batchnorm:
            mu = (w[:, None] * z).sum(0) / w.sum()
            var = (w[:, None] * (z - mu) ** 2).sum(0) / w.sum()
            z = (z - mu) / torch.sqrt(var + 1e-5) * t[f"bn{i}.gamma"][0] + t[f"bn{i}.beta"][0]
            W = W_BATCH.sum()
            np.testing.assert_allclose(new_state[f"bn{i}.running_mean"][0, 0], 0.1 * mu.detach().numpy(), atol=1e-12)
            unbiased = var.detach().numpy() * W / (W - 1)
            np.testing.assert_allclose(new_state[f"bn{i}.running_var"][0, 0], 0.9 + 0.1 * unbiased, atol=1e-12)
        else:
            z = z + t[f"dense{i}.b"][0]
        a = torch.tanh(z)
    out = a @ t["out.W"] + t["out.b"][0]
    per = torch.nn.functional.cross_entropy(out, torch.tensor(y), reduction="none")
    ((w * per).sum() / w.sum()).backward()
    for n, tensor in t.items():
        np.testing.assert_allclose(grads[n][0].reshape(tensor.shape), tensor.grad.numpy(), atol=1e-6, err_msg=n)


# ---------------------------------------------------------------------------------------------
# sample_weight and class_weight on the estimators
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [Classifier, Regressor])
def test_weight_two_equals_a_duplicated_row(make) -> None:
    """Integer weights are repeated rows (float64, batch norm on: its statistics are weighted too);
    a zero weight is a removed row."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 4))
    y = rng.integers(0, 3, size=40) if make is Classifier else rng.normal(size=40)
    w = rng.integers(0, 3, size=40)
    params = dict(hidden=(16, 8), epochs=8, batch_size=128, learning_rate=1e-2, random_state=0)
    weighted = make(**params).fit(X, y, sample_weight=w)
    repeated = make(**params).fit(X.repeat(w, axis=0), y.repeat(w))
    out = "predict_proba" if make is Classifier else "predict"
    np.testing.assert_allclose(getattr(weighted, out)(X), getattr(repeated, out)(X), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-9)
    ones = make(**params).fit(X, y, sample_weight=np.ones(40))
    plain = make(**params).fit(X, y)
    np.testing.assert_allclose(getattr(ones, out)(X), getattr(plain, out)(X), rtol=1e-9, atol=1e-12)


def test_weighting_a_class_up_moves_the_decision() -> None:
    X, y = make_classification(n_samples=400, n_features=6, weights=[0.85, 0.15], class_sep=0.5, random_state=0)
    params = dict(hidden=(16,), epochs=20, learning_rate=1e-2, random_state=0)
    plain = Classifier(**params).fit(X, y)
    up = Classifier(**params, class_weight={1: 6.0}).fit(X, y)
    balanced = Classifier(**params, class_weight="balanced").fit(X, y)
    n_plain, n_up = (plain.predict(X) == 1).sum(), (up.predict(X) == 1).sum()
    assert n_up > 1.5 * n_plain, (n_plain, n_up)
    assert (balanced.predict(X) == 1).sum() > 1.5 * n_plain
    # class_weight is sample weights of the class's weight; "balanced" is scikit-learn's
    by_rows = Classifier(**params).fit(X, y, sample_weight=compute_sample_weight("balanced", y))
    np.testing.assert_allclose(balanced.predict_proba(X), by_rows.predict_proba(X), rtol=1e-9, atol=1e-12)
    sw = np.random.default_rng(0).uniform(0.5, 2.0, size=len(y))
    np.testing.assert_allclose(
        class_weights("balanced", np.array([0, 1]), y, sw),
        compute_class_weight("balanced", classes=np.array([0, 1]), y=y, sample_weight=sw),
    )
    np.testing.assert_allclose(
        class_weights("balanced", np.array([0, 1]), y, None),
        compute_class_weight("balanced", classes=np.array([0, 1]), y=y),
    )


def test_class_weight_with_string_labels() -> None:
    names = np.array(["setosa", "versicolor", "virginica"], dtype=object)[Y_IRIS]
    clf = Classifier(**SMALL, random_state=0, class_weight={"virginica": 2.0}).fit(X_IRIS, names)
    assert clf.predict(X_IRIS).dtype == object


# ---------------------------------------------------------------------------------------------
# warm_start, partial_fit, predict_log_proba, verbose
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [Classifier, Regressor])
def test_warm_start_continues_the_loss_curve(make) -> None:
    X, y = (X_IRIS, Y_IRIS) if make is Classifier else (X_DIAB, Y_DIAB)
    est = make(hidden=(16,), epochs=5, learning_rate=1e-2, random_state=0, warm_start=True).fit(X, y)
    first = list(est.loss_curve_)
    est.fit(X, y)
    assert est.n_iter_ == 10 and len(est.loss_curve_) == 10 and len(est.history_) == 10
    assert est.loss_curve_[:5] == first
    assert [r["epoch"] for r in est.history_] == list(range(10))
    assert est.loss_curve_[5] < first[0]  # it went on from the fitted weights, not from scratch
    cold = make(hidden=(16,), epochs=5, learning_rate=1e-2, random_state=0).fit(X, y).fit(X, y)
    assert cold.n_iter_ == 5 and cold.loss_curve_ == first


def test_warm_start_with_other_classes_is_refused() -> None:
    clf = Classifier(**SMALL, warm_start=True).fit(X_IRIS, Y_IRIS)
    with pytest.raises(ValueError, match=r"warm_start needs the classes of the previous fit, \[0, 1, 2\]"):
        clf.fit(X_IRIS[Y_IRIS < 2], Y_IRIS[Y_IRIS < 2])


@pytest.mark.parametrize("make", [Classifier, Regressor])
def test_partial_fit_keeps_the_loss_curve_after_fit(make) -> None:
    X, y = (X_IRIS, Y_IRIS) if make is Classifier else (X_DIAB, Y_DIAB)
    est = make(**SMALL, random_state=0)
    est.partial_fit(X, y, **({"classes": [0, 1, 2]} if make is Classifier else {}))
    est.partial_fit(X, y, sample_weight=np.full(len(y), 2.0))
    assert est.n_iter_ == 2 and len(est.loss_curve_) == 2
    est.fit(X, y)
    assert len(est.loss_curve_) == 4
    est.partial_fit(X, y)
    assert est.n_iter_ == 5 and len(est.loss_curve_) == 5 and est.history_[-1]["epoch"] == 4


def test_predict_log_proba() -> None:
    clf = Classifier(**SMALL, random_state=0).fit(X_IRIS, Y_IRIS)
    logp = clf.predict_log_proba(X_IRIS)
    np.testing.assert_allclose(np.exp(logp), clf.predict_proba(X_IRIS), rtol=1e-12)
    far = clf.predict_log_proba(X_IRIS * 1e4)  # probabilities that underflow: their logs stay finite
    assert np.isfinite(far).all()


def test_verbose_prints_a_line_per_epoch(capsys) -> None:
    Classifier(**SMALL, random_state=0, verbose=True, early_stopping=True).fit(X_IRIS, Y_IRIS)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("Epoch 1, loss = ") and ", validation score = " in lines[0]
    Regressor(**SMALL, random_state=0, verbose=1, early_stopping=True).fit(X_DIAB, Y_DIAB)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all(", validation score = " in line for line in lines)  # R² of the held-out part
    reg = Regressor(**SMALL, random_state=0, verbose=True)
    reg.partial_fit(X_DIAB, Y_DIAB)
    reg.partial_fit(X_DIAB, Y_DIAB)
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.split(",")[0] for line in out] == ["Epoch 1", "Epoch 2"]
    Classifier(**SMALL, random_state=0).fit(X_IRIS, Y_IRIS)
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------------------------------------
# Bad weights: one line each
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        (np.ones(149), "sample_weight has 149 values for 150 samples"),
        (np.ones((150, 2)), r"sample_weight must be 1-D, one weight per sample; got shape \(150, 2\)"),
        (np.r_[np.ones(149), -1.0], r"negative value \(-1.0\) at row 149"),
        (np.zeros(150), "every weight is zero"),
        (np.r_[np.nan, np.ones(149)], r"non-finite value \(nan\) at row 0"),
        (np.r_[np.ones(3), np.inf, np.ones(146)], r"non-finite value \(inf\) at row 3"),
        (np.array(["a"] * 150), "sample_weight must hold numbers"),
        (np.where(Y_IRIS == 0, 1.0, 0.0), "only one class has weight"),
    ],
    ids=["length", "2d", "negative", "all-zero", "nan", "inf", "text", "one-class"],
)
def test_bad_sample_weight_is_one_line(weights, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        Classifier(**SMALL).fit(X_IRIS, Y_IRIS, sample_weight=weights)
    assert "\n" not in str(info.value)
    if "class" not in match:
        with pytest.raises(ValueError, match=match):
            Regressor(**SMALL).fit(X_IRIS, Y_IRIS.astype(float), sample_weight=weights)
        with pytest.raises(ValueError, match=match):
            Regressor(**SMALL).partial_fit(X_IRIS, Y_IRIS.astype(float), sample_weight=weights)


@pytest.mark.parametrize(
    ("class_weight", "match"),
    [
        ({3: 2.0}, r"class_weight names class 3, which is not among the classes \[0, 1, 2\]"),
        ({"setosa": 2.0}, "class_weight names class 'setosa'"),
        ({1: -1.0}, r"class_weight\[1\] = -1.0: a weight must be a finite number >= 0"),
        ({0: 0.0, 1: 0.0}, "only one class has weight"),
        ("unbalanced", "class_weight"),
    ],
    ids=["unknown-class", "unknown-name", "negative", "one-class-left", "bad-string"],
)
def test_bad_class_weight_is_one_line(class_weight, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        Classifier(**SMALL, class_weight=class_weight).fit(X_IRIS, Y_IRIS)
    assert "\n" not in str(info.value)


def test_validation_weights_make_the_validation_loss_a_weighted_mean() -> None:
    """validation_data's third element weighs the validation loss; held-out parts carry their weights."""
    from sklearn.metrics import log_loss

    w = np.random.default_rng(2).uniform(0.0, 3.0, size=len(Y_IRIS))
    clf = Classifier(**SMALL, random_state=0).fit(X_IRIS, Y_IRIS, validation_data=(X_IRIS, Y_IRIS, w))
    expected = log_loss(Y_IRIS, clf.predict_proba(X_IRIS), sample_weight=w)
    assert clf.history_[-1]["val_loss"] == pytest.approx(expected, rel=1e-9)
    es = Classifier(**SMALL, random_state=0, early_stopping=True).fit(X_IRIS, Y_IRIS, sample_weight=w)
    assert all(np.isfinite(r["val_loss"]) for r in es.history_)


def test_partial_fit_refuses_balanced_class_weight() -> None:
    with pytest.raises(ValueError, match="class_weight='balanced' is not supported by partial_fit"):
        Classifier(**SMALL, class_weight="balanced").partial_fit(X_IRIS, Y_IRIS, classes=[0, 1, 2])
    clf = Classifier(**SMALL, random_state=0, class_weight={2: 3.0}).partial_fit(X_IRIS, Y_IRIS, classes=[0, 1, 2])
    assert clf.n_iter_ == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weighted_kernel_matches_numpy(dtype) -> None:
    """The numba weighted cross-entropy and the numpy one agree to rounding, in float32 too."""
    logits = (RNG.normal(size=(3, 12, 5)) * 4).astype(dtype)
    y = RNG.integers(0, 5, size=12)
    ref = LOSSES["cross_entropy"](logits.copy(), y, Backend.NUMPY, W_BATCH)
    got = LOSSES["cross_entropy"](logits.copy(), y, Backend.NUMBA, W_BATCH)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    assert got[2].dtype == dtype


def test_a_regressor_file_exports_to_onnx(tmp_path) -> None:
    import onnxruntime as ort

    import caviar

    Regressor(**SMALL, random_state=0).fit(X_DIAB, Y_DIAB).save(tmp_path / "r.npz")
    back = caviar.load(tmp_path / "r.npz")
    session = ort.InferenceSession(back.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"X": X_DIAB.astype(np.float32)})[0]
    np.testing.assert_allclose(got, back.predict(X_DIAB), rtol=1e-5, atol=1e-5 * np.abs(Y_DIAB).max())
