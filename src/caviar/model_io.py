"""The model file: one .npz with a JSON header and the arrays under documented names.

Names (see docs/model-format.md): ``dense{i}.W`` (n_in, n_out), ``dense{i}.b`` (n_out,) only where no
batch norm follows, ``bn{i}.gamma|beta|running_mean|running_var`` (n_out,), ``out.W``, ``out.b``,
``input.mean`` and ``input.std`` when inputs are standardized, and ``__caviar__``: the JSON header.
Arrays are stored per model (no population axis), so other tools can read them directly.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from caviar.errors import ModelFileError

FORMAT = "caviar-model"
VERSION = 1
HEADER = "__caviar__"


def _flat(a: np.ndarray) -> np.ndarray:
    """Drop the (1, F) row axis of biases and BN vectors; keep matrices as they are."""
    return a.reshape(-1) if a.ndim == 2 and a.shape[0] == 1 else a


def save_classifier(clf, path: str | Path | BinaryIO) -> Path | BinaryIO:
    """Write a fitted Classifier to ``path`` (``.npz`` is appended if missing) or a binary file object."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(clf, "params_")
    if not hasattr(path, "write"):
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz")
    # matrices keep (n_in, n_out) even when n_in == 1; only (1, F) vectors become (F,)
    arrays = {n: a if n.endswith(".W") else _flat(a) for n, a in {**clf.params_, **clf.state_}.items()}
    if clf.standardizer_ is not None:
        d = clf.standardizer_.to_dict()
        arrays["input.mean"], arrays["input.std"] = d["mean"], d["std"]
    header = {
        "format": FORMAT,
        "version": VERSION,
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in clf.get_params().items()},
        "n_features_in": int(clf.n_features_in_),
        "classes": np.asarray(clf.classes_).tolist(),
        "history": clf.history_,
    }
    arrays[HEADER] = np.array(json.dumps(header))
    if hasattr(path, "write"):
        np.savez(path, **arrays)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


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
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, TypeError) as exc:  # TypeError: a .npy
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


def load(path: str | Path | BinaryIO):
    """Return the Classifier stored in ``path``; it predicts exactly as the saved one did."""
    from caviar.data.preprocess import Standardizer
    from caviar.nn.network import Architecture, init_params
    from caviar.sklearn import Classifier

    header, arrays = read_model_file(path)
    missing = [key for key in ("params", "n_features_in", "classes") if key not in header]
    if missing:
        raise ModelFileError(f"{_name(path)}: header lacks {', '.join(missing)}")
    params = dict(header["params"])
    params["hidden"] = tuple(params.get("hidden", ()))
    try:
        clf = Classifier(**params)
    except TypeError as exc:
        raise ModelFileError(f"{path}: unknown parameter in header ({exc})") from None
    clf.n_features_in_ = int(header["n_features_in"])
    clf.classes_ = np.asarray(header["classes"])

    m = clf.model_config()
    arch = Architecture(clf.n_features_in_, len(clf.classes_), m.hidden, m.activation, m.batchnorm)
    want_params, want_state = init_params(arch, [np.random.default_rng(0)], np.dtype(clf.dtype))
    clf.params_, clf.state_ = {}, {}
    for target, want in ((clf.params_, want_params), (clf.state_, want_state)):
        for name, ref in want.items():
            if name not in arrays:
                raise ModelFileError(f"{path}: array {name!r} is missing")
            a = arrays[name].astype(clf.dtype)
            expected = ref[0].shape if name.endswith(".W") else (ref[0].size,)
            if a.shape != expected:
                raise ModelFileError(f"{path}: array {name!r} has shape {a.shape}, expected {expected}")
            target[name] = a.reshape(ref[0].shape)
    if "input.mean" in arrays:
        if "input.std" not in arrays:
            raise ModelFileError(f"{_name(path)}: array 'input.std' is missing (input.mean is there)")
        clf.standardizer_ = Standardizer.from_dict({"mean": arrays["input.mean"], "std": arrays["input.std"]})
    else:
        clf.standardizer_ = None
    clf.history_ = header.get("history", [])
    return clf
