"""ONNX export: onnxruntime's outputs equal caviar's within 1e-5 for each activation, with and
without batch norm (and dropout, the identity at inference), with and without standardization;
``caviar export-model``; a regressor's graph maps its standardized target back."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import load_wine

from caviar import Classifier
from caviar.data import Standardizer
from caviar.export import save_onnx, to_onnx
from caviar.nn.network import Architecture, forward, init_params

X, y = load_wine(return_X_y=True)


def run(model, X: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"X": X.astype(np.float32)})[0]


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid"])
def test_classifier_probabilities_match(activation, batchnorm):
    clf = Classifier(
        hidden=(16, 8), activation=activation, batchnorm=batchnorm, dropout=0.2, epochs=3, batch_size=32, random_state=1
    ).fit(X, y)
    got = run(clf.to_onnx(), X)
    np.testing.assert_allclose(got, clf.predict_proba(X), atol=1e-5)
    assert (got.argmax(1) == np.searchsorted(clf.classes_, clf.predict(X))).all()


def test_without_standardization_and_hidden_layers():
    clf = Classifier(hidden=(), standardize=False, epochs=2, random_state=0).fit(X / 100, y)
    np.testing.assert_allclose(run(to_onnx(clf), X / 100), clf.predict_proba(X / 100), atol=1e-5)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_regression_graph_maps_the_target_back(batchnorm):
    """A regressor-shaped estimator (no classes_, a target_scaler_): predictions = out * std + mean."""
    arch = Architecture(4, 1, (8,), "tanh", batchnorm)
    params, state = init_params(arch, [np.random.default_rng(3)], np.float32)
    if batchnorm:
        state = {n: a + 0.1 * (i + 1) for i, (n, a) in enumerate(state.items())}
    one = {n: a[0] for n, a in params.items()}
    scaler = Standardizer(np.array([1.0, 2, 3, 4]), np.array([2.0, 1, 0.5, 3]))
    est = SimpleNamespace(
        params_=one,
        state_={n: a[0] for n, a in state.items()},
        architecture_=arch,
        standardizer_=scaler,
        target_scaler_=Standardizer(np.array([150.0]), np.array([70.0])),
    )
    Xr = np.random.default_rng(0).normal(size=(20, 4))
    z, _, _ = forward(arch, params, state, scaler.transform(Xr).astype(np.float32), train=False)
    want = z[0, :, 0] * 70.0 + 150.0
    got = run(to_onnx(est), Xr)
    assert got.shape == (20,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_export_model_command(tmp_path):
    clf = Classifier(hidden=(8,), epochs=2, random_state=0).fit(X, y)
    clf.save(tmp_path / "m.npz")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "caviar",
            "export-model",
            str(tmp_path / "m.npz"),
            "--format",
            "onnx",
            "-o",
            str(tmp_path / "m.onnx"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    import onnx

    np.testing.assert_allclose(run(onnx.load(str(tmp_path / "m.onnx")), X), clf.predict_proba(X), atol=1e-5)
    bad = subprocess.run(
        [sys.executable, "-m", "caviar", "export-model", str(tmp_path / "m.npz"), "--format", "pmml"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode != 0 and "'pmml' is not one of onnx" in bad.stderr


def test_unfitted_is_one_line(tmp_path):
    from caviar.errors import CaviarError

    with pytest.raises(CaviarError, match="not fitted"):
        save_onnx(Classifier(), tmp_path / "x.onnx")
