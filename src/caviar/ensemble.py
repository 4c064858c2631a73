"""An ensemble of fitted classifiers averaged in probability, and its model file.

The members may have different shapes (widths, activations, batch norm) and even different input
scalings; they must share the features and the classes. ``predict_proba`` is the mean of the
members' probabilities, ``predict`` its most probable class.

The file is an ordinary caviar model file (docs/model-format.md) whose header says
``"kind": "ensemble"``: member ``i``'s arrays are stored under ``member{i}/<name>`` with the names of a
single model's file, and ``header["members"][i]`` is that member's own header. ``caviar.load`` reads
either kind.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np

from caviar.errors import ModelFileError
from caviar.model_io import FORMAT, HEADER, VERSION, write_model_file

KIND = "ensemble"
COMBINE = "mean_probability"


class EnsembleClassifier:
    """k fitted classifiers (``caviar.Classifier``) whose probabilities are averaged."""

    def __init__(self, members: Sequence[Any]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        first = members[0]
        for i, m in enumerate(members[1:], start=1):
            if list(np.asarray(m.classes_)) != list(np.asarray(first.classes_)):
                raise ValueError(f"ensemble member {i} has classes {list(m.classes_)}, member 0 {list(first.classes_)}")
            if int(m.n_features_in_) != int(first.n_features_in_):
                raise ValueError(
                    f"ensemble member {i} takes {m.n_features_in_} features, member 0 {first.n_features_in_}"
                )
        self.members = list(members)
        self.classes_ = np.asarray(first.classes_)
        self.n_features_in_ = int(first.n_features_in_)

    def member_proba(self, X: Any) -> np.ndarray:
        """Each member's probabilities, stacked: (k, n_samples, n_classes)."""
        return np.stack([m.predict_proba(X) for m in self.members])

    def predict_proba(self, X: Any) -> np.ndarray:
        """The mean of the members' class probabilities (n_samples, n_classes)."""
        return self.member_proba(X).mean(axis=0)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row under the averaged probabilities."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy on (X, y), as scikit-learn's classifiers score."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return f"EnsembleClassifier({len(self.members)} members)"


def save_ensemble(ensemble: EnsembleClassifier, path: str | Path | BinaryIO) -> Path | BinaryIO:
    """Write ``ensemble`` as one model file (``.npz`` appended to a path if missing) or to a binary file."""
    from caviar.model_io import read_model_file, save_classifier

    arrays: dict[str, Any] = {}
    headers = []
    for i, member in enumerate(ensemble.members):
        buffer = io.BytesIO()
        save_classifier(member, buffer)
        buffer.seek(0)
        header, member_arrays = read_model_file(buffer)
        headers.append(header)
        arrays.update({f"member{i}/{name}": a for name, a in member_arrays.items()})
    header = {
        "format": FORMAT,
        "version": VERSION,
        "kind": KIND,
        "combine": COMBINE,
        "n_features_in": ensemble.n_features_in_,
        "classes": ensemble.classes_.tolist(),
        "members": headers,
    }
    return write_model_file(path, header, arrays)


def ensemble_from_file(
    path: Any, header: dict, arrays: dict[str, np.ndarray], load: Callable[[BinaryIO], Any]
) -> EnsembleClassifier:
    """The ensemble an ensemble file's (header, arrays) hold, each member read by ``load`` (``caviar.load``,
    which hands ensemble files here); ModelFileError naming what is wrong."""
    members_headers = header.get("members")
    if not isinstance(members_headers, list) or not members_headers:
        raise ModelFileError(f"{path}: an ensemble file's header needs a non-empty 'members' list")
    if header.get("combine", COMBINE) != COMBINE:
        raise ModelFileError(f"{path}: ensemble combine {header.get('combine')!r}; this caviar reads {COMBINE!r}")
    members = []
    for i, member_header in enumerate(members_headers):
        prefix = f"member{i}/"
        own = {name[len(prefix) :]: a for name, a in arrays.items() if name.startswith(prefix)}
        if not own:
            raise ModelFileError(f"{path}: no arrays for ensemble member {i} (names {prefix}...)")
        buffer = io.BytesIO()
        own[HEADER] = np.array(json.dumps(member_header))
        np.savez(buffer, **cast(dict[str, Any], own))
        buffer.seek(0)
        try:
            members.append(load(buffer))
        except ModelFileError as exc:
            raise ModelFileError(f"{path}: ensemble member {i}: {str(exc).replace('<model bytes>: ', '')}") from None
    try:
        return EnsembleClassifier(members)
    except ValueError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
