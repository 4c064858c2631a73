"""The model file: one .npz with a JSON header and the arrays under documented names.

Names (see docs/model-format.md): ``dense{i}.W`` (n_in, n_out), ``dense{i}.b`` (n_out,) only where no
batch norm follows, ``bn{i}.gamma|beta|running_mean|running_var`` (n_out,), ``out.W``, ``out.b``,
``input.mean`` and ``input.std`` when inputs are standardized, and ``__caviar__``: the JSON header.
Arrays are stored per model (no population axis), so other tools can read them directly.

A Regressor's file has ``kind = "regressor"`` in its header, no ``classes``, and its target scaling
as the arrays ``target.mean`` and ``target.std`` (1,).

This module is the file format only: ``caviar.sklearn.load`` (``caviar.load``) builds the Classifier
or Regressor from what it reads, and ``save_model`` takes any fitted estimator with their
attributes; so the estimator imports the format and never the other way round.
"""

from __future__ import annotations

import json
import zipfile
from numbers import Integral
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np

from caviar.data.preprocess import Standardizer
from caviar.errors import ModelFileError
from caviar.nn.network import Architecture, init_params

FORMAT = "caviar-model"
VERSION = 1
HEADER = "__caviar__"


def _flat(a: np.ndarray) -> np.ndarray:
    """Drop the (1, F) row axis of biases and BN vectors; keep matrices as they are."""
    return a.reshape(-1) if a.ndim == 2 and a.shape[0] == 1 else a


#: The header's ``kind`` of a Regressor's file (a Classifier's file has no ``kind``, as in version 1's first files).
REGRESSOR = "regressor"


def header_params(est: Any) -> dict[str, Any]:
    """The estimator's constructor parameters as JSON: ``hidden`` as a list; a ``random_state`` that is a
    generator object is stored as None (a generator's state is no parameter), the deprecated ``seed``
    alias not at all."""
    params = _as_json(est.get_params())
    if params.get("seed") == "deprecated":
        del params["seed"]
    return params


def _as_json(params: dict[str, Any]) -> dict[str, Any]:
    """Constructor parameters as the header stores them: tuples as lists, a ``random_state`` that is
    not an integer (None, a RandomState, a Generator) as None."""
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}
    rs = params.get("random_state")
    params["random_state"] = int(rs) if isinstance(rs, Integral) and not isinstance(rs, bool) else None
    return params


def write_model_file(path: str | Path | BinaryIO, header: dict, arrays: dict[str, Any]) -> Path | BinaryIO:
    """Write a model file: ``arrays`` and the JSON ``header`` in one .npz, to a binary file object or to
    ``path`` (``.npz`` appended when missing, parent folders made). Returns the file object or the path."""
    arrays = {**arrays, HEADER: np.array(json.dumps(header))}
    if hasattr(path, "write"):  # a binary file object
        np.savez(cast(BinaryIO, path), **arrays)
        return cast(BinaryIO, path)
    target = Path(path)
    if target.suffix != ".npz":
        target = target.with_suffix(target.suffix + ".npz")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as fh:
        np.savez(fh, **arrays)
    return target


#: The estimators' constructor parameters beyond the registry's fields (caviar.hparams.FIELDS), with
#: the defaults of their signatures: what a study writes into a trial's model file without building an
#: estimator (so without importing scikit-learn). tests/test_model_io.py keeps them equal to
#: ``Classifier().get_params()`` and ``Regressor().get_params()``.
ESTIMATOR_DEFAULTS: dict[str, Any] = {
    "validation_fraction": 0.1,
    "standardize": True,
    "shuffle": True,
    "random_state": None,
    "dtype": "float64",
    "verbose": False,
    "warm_start": False,
}
CLASSIFIER_DEFAULTS: dict[str, Any] = {**ESTIMATOR_DEFAULTS, "class_weight": None}
REGRESSOR_DEFAULTS: dict[str, Any] = {**ESTIMATOR_DEFAULTS, "loss": "squared_error"}


def constructor_params(regression: bool, given: dict[str, Any]) -> dict[str, Any]:
    """Every constructor parameter of a Classifier (or a Regressor) built with ``given``, as
    ``header_params`` writes them: the registry's defaults and the estimator's, then ``given``."""
    from caviar.hparams import FIELDS

    unknown = set(given) - {p.name for p in FIELDS} - set(REGRESSOR_DEFAULTS if regression else CLASSIFIER_DEFAULTS)
    if unknown:
        raise ValueError(f"not an estimator parameter: {', '.join(sorted(unknown))}")
    return _as_json(
        {**{p.name: p.default for p in FIELDS}, **(REGRESSOR_DEFAULTS if regression else CLASSIFIER_DEFAULTS), **given}
    )


def model_file_contents(
    params: dict[str, Any],
    weights: dict[str, np.ndarray],
    n_features: int,
    history: list[dict[str, float]],
    standardizer: Standardizer | None,
    classes: np.ndarray | None = None,
    target_scaler: Standardizer | None = None,
    n_iter: int | None = None,
    loss_curve: list[float] | None = None,
    feature_names: list[str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and arrays of a single model's file: a Classifier's (``classes``) or a Regressor's
    (``target_scaler``). ``params`` as ``header_params`` gives them; ``weights`` the parameters and
    batch-norm statistics without the population axis."""
    # matrices keep (n_in, n_out) even when n_in == 1; only (1, F) vectors become (F,)
    arrays: dict[str, Any] = {n: a if n.endswith(".W") else _flat(a) for n, a in weights.items()}
    if standardizer is not None:
        d = standardizer.to_dict()
        arrays["input.mean"], arrays["input.std"] = d["mean"], d["std"]
    header: dict[str, Any] = {"format": FORMAT, "version": VERSION, "params": params, "n_features_in": int(n_features)}
    if classes is not None:
        header["classes"] = np.asarray(classes).tolist()
    else:  # a regressor: its target scaling maps the network's output back to the target's units
        if target_scaler is None:
            raise ValueError("a model file needs the classes (a Classifier) or the target scaling (a Regressor)")
        header["kind"] = REGRESSOR
        arrays["target.mean"] = np.asarray(target_scaler.mean, np.float64).reshape(1)
        arrays["target.std"] = np.asarray(target_scaler.std, np.float64).reshape(1)
    header.update(
        {
            "history": history,
            "n_iter": int(len(history) if n_iter is None else n_iter),
            "loss_curve": [
                float(v) for v in (loss_curve if loss_curve is not None else [r["train_loss"] for r in history])
            ],
        }
    )
    if feature_names is not None:  # predicting with other, missing or reordered names is refused
        header["feature_names_in"] = [str(n) for n in feature_names]
    return header, arrays


def save_model(clf: Any, path: str | Path | BinaryIO) -> Path | BinaryIO:
    """Write a fitted Classifier or Regressor to ``path`` (``.npz`` is appended if missing) or a binary
    file object."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(clf, "params_")
    classifier = hasattr(clf, "classes_")
    header, arrays = model_file_contents(
        header_params(clf),
        {**clf.params_, **clf.state_},
        clf.n_features_in_,
        clf.history_,
        clf.standardizer_,
        classes=clf.classes_ if classifier else None,
        target_scaler=None if classifier else clf.target_scaler_,
        n_iter=getattr(clf, "n_iter_", None),
        loss_curve=getattr(clf, "loss_curve_", None),
        feature_names=getattr(clf, "feature_names_in_", None),
    )
    return write_model_file(path, header, arrays)


#: The name every caller used before the Regressor had a file (the runner, the CLI, the ensemble).
save_classifier = save_model


def read_model_file(path: str | Path | BinaryIO) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays) of a model file (a path or a binary file object); ModelFileError if it is
    missing, corrupt or foreign."""
    if not hasattr(path, "read"):
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"model file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, TypeError, AttributeError) as exc:  # a .npy
        raise ModelFileError(f"{path}: not a readable .npz model file ({exc.__class__.__name__})") from None
    if HEADER not in arrays:
        raise ModelFileError(f"{path}: not a caviar model file (no {HEADER} header)")
    try:
        header = json.loads(str(arrays.pop(HEADER)))
    except json.JSONDecodeError:
        raise ModelFileError(f"{path}: the {HEADER} header is not valid JSON") from None
    if header.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a caviar model file (format {header.get('format')!r})")
    if header.get("version") != VERSION:
        raise ModelFileError(f"{path}: model file version {header.get('version')!r}; this caviar reads {VERSION}")
    return header, arrays


def _name(path) -> str:
    """How a model file is named in messages (file objects have no path)."""
    return str(getattr(path, "name", path)) if not hasattr(path, "getvalue") else "<model bytes>"


def model_weights(
    path: str | Path | BinaryIO, arrays: dict[str, np.ndarray], arch: Architecture, dtype: np.dtype
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], Standardizer | None]:
    """(params, running statistics, standardizer) of a model file's ``arrays`` for ``arch``, each array
    checked against the shape the architecture gives it; ModelFileError naming the first one wrong."""
    want_params, want_state = init_params(arch, [np.random.default_rng(0)], dtype)
    params: dict[str, np.ndarray] = {}
    state: dict[str, np.ndarray] = {}
    for target, want in ((params, want_params), (state, want_state)):
        for name, ref in want.items():
            if name not in arrays:
                raise ModelFileError(f"{path}: array {name!r} is missing")
            a = arrays[name].astype(dtype)
            expected = ref[0].shape if name.endswith(".W") else (ref[0].size,)
            if a.shape != expected:
                raise ModelFileError(f"{path}: array {name!r} has shape {a.shape}, expected {expected}")
            target[name] = a.reshape(ref[0].shape)
    standardizer = None
    if "input.mean" in arrays:
        if "input.std" not in arrays:
            raise ModelFileError(f"{_name(path)}: array 'input.std' is missing (input.mean is there)")
        standardizer = Standardizer.from_dict({"mean": arrays["input.mean"], "std": arrays["input.std"]})
    return params, state, standardizer


def check_header(path: str | Path | BinaryIO, header: dict) -> dict:
    """The estimator's constructor parameters from a header (``hidden`` as a tuple; an older file's
    ``seed`` as ``random_state``); ModelFileError if the header lacks what a model needs."""
    needed = ("params", "n_features_in") if header.get("kind") == REGRESSOR else ("params", "n_features_in", "classes")
    missing = [key for key in needed if key not in header]
    if missing:
        raise ModelFileError(f"{_name(path)}: header lacks {', '.join(missing)}")
    params = dict(header["params"])
    params["hidden"] = tuple(params.get("hidden", ()))
    seed = params.pop("seed", "deprecated")
    if seed != "deprecated" and "random_state" not in params:  # written before random_state replaced seed
        params["random_state"] = seed
    return params


def target_scaling(path: str | Path | BinaryIO, arrays: dict[str, np.ndarray]) -> Standardizer:
    """A regressor file's target scaling (``target.mean``, ``target.std``); ModelFileError naming a missing
    or misshapen array."""
    for name in ("target.mean", "target.std"):
        if name not in arrays:
            raise ModelFileError(f"{_name(path)}: array {name!r} is missing (a regressor's target scaling)")
        if arrays[name].shape != (1,):
            raise ModelFileError(f"{_name(path)}: array {name!r} has shape {arrays[name].shape}, expected (1,)")
    return Standardizer(arrays["target.mean"].astype(np.float64), arrays["target.std"].astype(np.float64))
