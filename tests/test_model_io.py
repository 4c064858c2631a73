"""The model file: save -> caviar.load round trip, documented names and shapes, errors, plain-numpy use."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris

import caviar
from caviar import Classifier, ModelFileError

X, Y = load_iris(return_X_y=True)
LABELS = np.array(["setosa", "versicolor", "virginica"])[Y]


def fitted(**kw) -> Classifier:
    params = dict(hidden=(7, 5), epochs=3, learning_rate=1e-2)
    params.update(kw)
    return Classifier(**params).fit(X, LABELS)


def arrays_of(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def rewrite(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batchnorm", [True, False])
@pytest.mark.parametrize("standardize", [True, False])
def test_round_trip_predicts_identically(tmp_path: Path, dtype: str, batchnorm: bool, standardize: bool) -> None:
    clf = fitted(dtype=dtype, batchnorm=batchnorm, standardize=standardize)
    path = tmp_path / "model.npz"
    clf.save(path)
    back = caviar.load(path)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))
    assert back.get_params() == clf.get_params()
    assert back.params_["dense0.W"].dtype == np.dtype(dtype)
    assert list(back.classes_) == list(clf.classes_)
    assert back.history_ == clf.history_


def test_suffix_is_added(tmp_path: Path) -> None:
    clf = fitted()
    clf.save(tmp_path / "m")
    assert (tmp_path / "m.npz").is_file()
    np.testing.assert_array_equal(caviar.load(tmp_path / "m.npz").predict(X), clf.predict(X))


@pytest.mark.parametrize("batchnorm", [True, False])
def test_array_names_and_shapes(tmp_path: Path, batchnorm: bool) -> None:
    clf = fitted(batchnorm=batchnorm, dtype="float64")
    clf.save(tmp_path / "m.npz")
    arrays = arrays_of(tmp_path / "m.npz")
    widths = [4, 7, 5, 3]
    want = {"input.mean": (4,), "input.std": (4,), "out.W": (5, 3), "out.b": (3,), "__caviar__": ()}
    for i in range(2):
        want[f"dense{i}.W"] = (widths[i], widths[i + 1])
        if batchnorm:
            for v in ("gamma", "beta", "running_mean", "running_var"):
                want[f"bn{i}.{v}"] = (widths[i + 1],)
        else:
            want[f"dense{i}.b"] = (widths[i + 1],)
    assert {k: a.shape for k, a in arrays.items()} == want
    header = json.loads(str(arrays["__caviar__"]))
    assert header["format"] == "caviar-model" and header["version"] == 1
    assert header["n_features_in"] == 4
    assert header["classes"] == ["setosa", "versicolor", "virginica"]
    assert header["params"]["hidden"] == [7, 5] and header["params"]["batchnorm"] is batchnorm
    assert len(header["history"]) == 3 and "train_loss" in header["history"][0]


def test_one_feature_and_width_one_keep_matrix_shapes(tmp_path: Path) -> None:
    """dense0.W is (n_in, n_out) even when n_in == 1 (a (1, F) matrix is not a row vector)."""
    clf = Classifier(hidden=(1, 4), epochs=2, batchnorm=False).fit(X[:, :1], Y)
    clf.save(tmp_path / "m.npz")
    arrays = arrays_of(tmp_path / "m.npz")
    assert arrays["dense0.W"].shape == (1, 1)
    assert arrays["dense1.W"].shape == (1, 4)
    assert arrays["dense0.b"].shape == (1,)
    np.testing.assert_array_equal(caviar.load(tmp_path / "m.npz").predict(X[:, :1]), clf.predict(X[:, :1]))


def predict_by_hand(path: Path, X: np.ndarray) -> np.ndarray:
    """The numpy-only predictor of docs/model-format.md (kept in sync with it)."""
    z = np.load(path)
    h = json.loads(str(z["__caviar__"]))
    p = h["params"]
    a = (X - z["input.mean"]) / z["input.std"] if "input.mean" in z.files else X
    for i in range(len(p["hidden"])):
        a = a @ z[f"dense{i}.W"]
        if p["batchnorm"]:
            a = (a - z[f"bn{i}.running_mean"]) / np.sqrt(z[f"bn{i}.running_var"] + 1e-5)
            a = a * z[f"bn{i}.gamma"] + z[f"bn{i}.beta"]
        else:
            a = a + z[f"dense{i}.b"]
        act = p["activation"]
        a = {
            "relu": np.maximum(a, 0),
            "leaky_relu": np.where(a > 0, a, 0.01 * a),
            "tanh": np.tanh(a),
            "sigmoid": 1 / (1 + np.exp(-a)),
        }[act]
    logits = a @ z["out.W"] + z["out.b"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.array(h["classes"])[e.argmax(axis=1)], e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("batchnorm", [True, False])
def test_model_is_readable_with_plain_numpy(tmp_path: Path, activation: str, batchnorm: bool) -> None:
    clf = fitted(dtype="float64", activation=activation, batchnorm=batchnorm)
    clf.save(tmp_path / "m.npz")
    labels, proba = predict_by_hand(tmp_path / "m.npz", X)
    np.testing.assert_allclose(proba, clf.predict_proba(X), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(labels, clf.predict(X))


def test_docs_snippet_runs(tmp_path: Path) -> None:
    """The numpy-only snippet in docs/model-format.md predicts what the model predicts."""
    text = (Path(__file__).parents[1] / "docs" / "model-format.md").read_text()
    code = text.split("```python\n")[1].split("```")[0]
    clf = fitted(dtype="float64")
    clf.save(tmp_path / "model.npz")
    scope = {"PATH": str(tmp_path / "model.npz"), "X": X}
    exec(compile(code, "model-format.md", "exec"), scope)
    np.testing.assert_array_equal(scope["labels"], clf.predict(X))


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="model file not found"):
        caviar.load(tmp_path / "nope.npz")


def test_foreign_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "other.npz", a=np.arange(3))
    with pytest.raises(ModelFileError, match="not a caviar model file"):
        caviar.load(tmp_path / "other.npz")


def test_foreign_format_in_header(tmp_path: Path) -> None:
    np.savez(tmp_path / "other.npz", __caviar__=np.array(json.dumps({"format": "keras", "version": 1})))
    with pytest.raises(ModelFileError, match="format 'keras'"):
        caviar.load(tmp_path / "other.npz")


def test_newer_version(tmp_path: Path) -> None:
    fitted().save(tmp_path / "m.npz")
    arrays = arrays_of(tmp_path / "m.npz")
    header = json.loads(str(arrays["__caviar__"]))
    arrays["__caviar__"] = np.array(json.dumps({**header, "version": 99}))
    rewrite(tmp_path / "m.npz", arrays)
    with pytest.raises(ModelFileError, match="version 99"):
        caviar.load(tmp_path / "m.npz")


@pytest.mark.parametrize("how", ["garbage", "truncated", "npy", "empty"])
def test_corrupt_file(tmp_path: Path, how: str) -> None:
    path = tmp_path / "m.npz"
    fitted().save(path)
    raw = path.read_bytes()
    if how == "garbage":
        path.write_bytes(b"this is not a zip file at all" * 10)
    elif how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "npy":  # a plain .npy written under the .npz name
        with open(path, "wb") as fh:
            np.save(fh, np.arange(5))
    else:
        path.write_bytes(b"")
    with pytest.raises(ModelFileError, match="m.npz"):
        caviar.load(path)


def test_bad_json_header(tmp_path: Path) -> None:
    np.savez(tmp_path / "m.npz", __caviar__=np.array("{not json"))
    with pytest.raises(ModelFileError, match="not valid JSON"):
        caviar.load(tmp_path / "m.npz")


def test_missing_array(tmp_path: Path) -> None:
    fitted().save(tmp_path / "m.npz")
    arrays = arrays_of(tmp_path / "m.npz")
    del arrays["bn1.running_var"]
    rewrite(tmp_path / "m.npz", arrays)
    with pytest.raises(ModelFileError, match="'bn1.running_var' is missing"):
        caviar.load(tmp_path / "m.npz")


@pytest.mark.parametrize("change", ["transposed", "wrong-size", "vector-as-matrix"])
def test_wrong_shaped_array(tmp_path: Path, change: str) -> None:
    fitted().save(tmp_path / "m.npz")
    arrays = arrays_of(tmp_path / "m.npz")
    if change == "transposed":  # same size, wrong layout: must not be silently reshaped
        arrays["dense0.W"] = arrays["dense0.W"].T.copy()
    elif change == "wrong-size":
        arrays["out.W"] = np.zeros((5, 4), np.float32)
    else:
        arrays["bn0.gamma"] = arrays["bn0.gamma"].reshape(7, 1)
    rewrite(tmp_path / "m.npz", arrays)
    with pytest.raises(ModelFileError, match="has shape"):
        caviar.load(tmp_path / "m.npz")


def test_zip_without_npy_members(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ModelFileError):
        caviar.load(path)


def test_feature_names_n_iter_and_loss_curve_are_kept(tmp_path):
    """A model fitted on a DataFrame refuses, after loading, other, missing or reordered columns."""
    import pandas as pd
    import pytest as _pytest
    from sklearn.datasets import load_iris

    import caviar

    frame = load_iris(as_frame=True).data
    y = load_iris().target
    clf = caviar.Classifier(hidden=(8,), epochs=3, random_state=0).fit(frame, y)
    clf.save(tmp_path / "m.npz")
    back = caviar.load(tmp_path / "m.npz")
    assert list(back.feature_names_in_) == list(frame.columns)
    assert back.n_iter_ == clf.n_iter_ == 3 and back.loss_curve_ == clf.loss_curve_
    np.testing.assert_array_equal(back.predict_proba(frame), clf.predict_proba(frame))
    with _pytest.raises(ValueError, match="same order"):
        back.predict(frame[frame.columns[::-1]])
    with _pytest.raises(ValueError, match="feature names"):
        back.predict(frame.rename(columns={frame.columns[0]: "other"}))
    with _pytest.raises(ValueError):
        back.predict(pd.DataFrame(frame.to_numpy()[:, :3], columns=frame.columns[:3]))


# ---------------------------------------------------------------------------------------------
# The Regressor's file; what a loaded model remembers; older files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batchnorm", [True, False])
def test_regressor_round_trip_keeps_its_target_scaling(tmp_path: Path, batchnorm: bool) -> None:
    import pandas as pd

    frame = pd.DataFrame(X[:, :3], columns=["sepal length", "sepal width", "petal length"])
    target = X[:, 3] * 10 + 5
    reg = caviar.Regressor(hidden=(8,), epochs=4, batchnorm=batchnorm, random_state=0).fit(frame, target)
    reg.partial_fit(frame, target)
    reg.save(tmp_path / "r.npz")
    header = json.loads(str(arrays_of(tmp_path / "r.npz")["__caviar__"]))
    assert header["kind"] == "regressor" and "classes" not in header
    back = caviar.load(tmp_path / "r.npz")
    assert isinstance(back, caviar.Regressor)
    np.testing.assert_array_equal(back.predict(frame), reg.predict(frame))
    np.testing.assert_array_equal(back.target_scaler_.mean, reg.target_scaler_.mean)
    np.testing.assert_array_equal(back.target_scaler_.std, reg.target_scaler_.std)
    assert back.n_iter_ == reg.n_iter_ == 5 and back.loss_curve_ == reg.loss_curve_ and back.history_ == reg.history_
    assert list(back.feature_names_in_) == list(frame.columns)
    assert back.get_params() == reg.get_params()
    with pytest.raises(ValueError, match="same order"):
        back.predict(frame[frame.columns[::-1]])
    with pytest.raises(ValueError, match="Feature names unseen at fit time:\n- other"):
        back.predict(frame.rename(columns={"sepal width": "other"}))
    with pytest.raises(ValueError, match="missing:\n- sepal width"):
        back.predict(frame.drop(columns="sepal width").assign(extra=0.0)[["sepal length", "extra", "petal length"]])
    back.partial_fit(frame, target)  # a loaded model trains on
    assert back.n_iter_ == 6


def test_regressor_file_without_its_target_scaling_is_refused(tmp_path: Path) -> None:
    caviar.Regressor(hidden=(4,), epochs=1, random_state=0).fit(X[:, :3], X[:, 3]).save(tmp_path / "r.npz")
    arrays = arrays_of(tmp_path / "r.npz")
    del arrays["target.std"]
    rewrite(tmp_path / "r.npz", arrays)
    with pytest.raises(ModelFileError, match="array 'target.std' is missing"):
        caviar.load(tmp_path / "r.npz")


def test_random_state_in_the_file(tmp_path: Path) -> None:
    """An int random_state is kept; a RandomState or Generator (no parameter JSON can hold) becomes None;
    an older file's ``seed`` is read as random_state."""
    fitted(random_state=7).save(tmp_path / "a.npz")
    assert caviar.load(tmp_path / "a.npz").random_state == 7
    fitted(random_state=np.random.RandomState(0)).save(tmp_path / "b.npz")
    assert caviar.load(tmp_path / "b.npz").random_state is None
    arrays = arrays_of(tmp_path / "a.npz")
    header = json.loads(str(arrays["__caviar__"]))
    del header["params"]["random_state"]
    header["params"]["seed"] = 3  # as files were written before random_state
    arrays["__caviar__"] = np.array(json.dumps(header))
    rewrite(tmp_path / "a.npz", arrays)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no FutureWarning for a file the user did not write with seed=
        old = caviar.load(tmp_path / "a.npz")
    assert old.random_state == 3 and old.seed == "deprecated"


def test_a_study_writes_every_constructor_parameter_as_the_estimators_have_them() -> None:
    """A trial's model file is written without building an estimator (no scikit-learn import): its
    header's params must be what ``get_params`` gives, defaults and all."""
    from caviar.model_io import constructor_params, header_params
    from caviar.sklearn import Classifier, Regressor

    assert constructor_params(False, {}) == header_params(Classifier())
    assert constructor_params(True, {}) == header_params(Regressor())
    given = {"hidden": (32, 16), "learning_rate": 0.01, "random_state": 7, "dtype": "float32", "standardize": False}
    assert constructor_params(False, given) == header_params(Classifier(**given))
    with pytest.raises(ValueError, match="class_weight"):
        constructor_params(True, {"class_weight": None})
