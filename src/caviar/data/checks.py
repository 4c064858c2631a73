"""Checks on data at the door: one place for what ``caviar train``, ``caviar tune`` and in-memory data refuse.

Loading (caviar.data.datasets) already refuses what cannot be read as numbers. What is checked here
is whether the data, *as it will be trained on*, makes sense:

- finiteness after the cast to the training dtype (1e308 is finite in float64, inf in float32);
- at least 2 training rows and 2 classes in the training part (one class trains a constant);
- a validation part when the objective is a validation metric (``validation_fraction = 0`` with
  ``val_accuracy`` would rank trials by nothing);
- weights that fit in memory (``hidden = [10**12]`` is refused before anything is allocated).

Fewer training rows than ``batch_size`` is deliberate, not an error: every epoch is then one batch of
all the rows. A study's data fingerprint (:func:`fingerprint`) is how a resume tells the data changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from caviar.errors import DataError

__all__ = [
    "check_finite",
    "check_trainable",
    "check_weights_fit",
    "fingerprint",
    "fingerprint_diff",
    "scaling_hash",
    "weight_bytes",
]


def check_finite(X: np.ndarray, feature_names: Sequence[str] | None = None, where: str = "") -> np.ndarray:
    """``X`` unchanged when every value is finite in its dtype, else a DataError naming the first column."""
    bad = ~np.isfinite(X)
    if not bad.any():
        return X
    row, col = (int(i) for i in np.argwhere(bad)[0])
    named = feature_names is not None and len(feature_names) == X.shape[1]
    column = f"column '{feature_names[col]}'" if named and feature_names is not None else f"column {col}"
    raise DataError(
        f"{where}{column} holds {int(bad[:, col].sum())} value(s) that are not finite in {X.dtype} "
        f"(first at row {row}); values beyond {float(np.finfo(X.dtype).max):.3g} overflow: rescale the column"
    )


def as_training_dtype(
    X: np.ndarray, dtype: str | np.dtype, feature_names: Sequence[str] | None = None, where: str = ""
) -> np.ndarray:
    """``X`` cast to ``dtype`` (contiguous), then checked finite: the check sees what training sees."""
    with np.errstate(over="ignore", invalid="ignore"):
        cast = np.ascontiguousarray(X, dtype=dtype)
    return check_finite(cast, feature_names, where)


def check_trainable(
    y_train: np.ndarray, n_val: int, metric: str | None = None, where: str = "", task: str = "classification"
) -> None:
    """Refuse a training part that cannot train a classifier (or a regression: 2 rows), or a missing
    validation part a metric needs."""
    n = len(y_train)
    if n < 2:
        raise DataError(f"{where}the training part has {n} row(s); training needs at least 2")
    present = np.unique(y_train)
    if task == "classification" and len(present) < 2:
        raise DataError(
            f"{where}the training part holds one class only ({len(present)} distinct label); "
            "a classifier needs at least 2 classes"
        )
    if metric is not None and metric.startswith("val_") and n_val == 0:
        raise DataError(
            f"{where}metric {metric} needs a validation part, but validation_fraction = 0 leaves none; "
            "set validation_fraction > 0 or another metric"
        )


def weight_bytes(n_features: int, hidden: Sequence[int], n_classes: int, members: int, dtype: Any) -> int:
    """Bytes a population's weights take with their gradients, optimizer moments and kept copy (x5)."""
    widths = [int(n_features), *(int(w) for w in hidden), int(n_classes)]
    per_member = sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))
    return 5 * per_member * int(members) * np.dtype(dtype).itemsize


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def check_weights_fit(
    n_features: int, hidden: Sequence[int], n_classes: int, members: int = 1, dtype: Any = "float32", where: str = ""
) -> None:
    """Refuse, before anything is allocated, widths whose weights cannot fit in this machine's memory."""
    need = weight_bytes(n_features, hidden, n_classes, members, dtype)
    have = _memory_bytes()
    if have is not None and need > have:
        who = f"a population of {members}" if members > 1 else "one model"
        raise DataError(
            f"{where}hidden = {list(hidden)}: the weights of {who} need about {need / 2**30:.3g} GiB "
            f"(with gradients and optimizer state), more than this machine's {have / 2**30:.3g} GiB"
        )


# ------------------------------------------------------------------------------------------ fingerprint
def fingerprint(parts: Sequence[tuple[np.ndarray, np.ndarray]], classes: np.ndarray) -> dict[str, Any]:
    """What identifies a study's data: rows, features, classes and a SHA-256 of every part's X and y."""
    digest = hashlib.sha256()
    for X, y in parts:
        target = np.int64 if np.asarray(y).dtype.kind in "biu" else np.float64  # a regression's target is float
        for a in (np.ascontiguousarray(X), np.ascontiguousarray(y, dtype=target)):
            digest.update(f"{a.dtype.str}{a.shape}".encode())
            digest.update(a.tobytes())
    rows = sum(len(y) for _, y in parts)
    features = int(parts[0][0].shape[1]) if parts and parts[0][0].ndim == 2 else 0
    return {
        "rows": int(rows),
        "features": features,
        "classes": [_plain(c) for c in classes],
        "sha256": digest.hexdigest(),
    }


def scaling_hash(*scalers: Any) -> str:
    """A SHA-256 of the scaling statistics (``mean``/``std`` of each scaler given, None for none)."""
    digest = hashlib.sha256()
    for scaler in scalers:
        for a in (getattr(scaler, "mean", None), getattr(scaler, "std", None)):
            digest.update(b"-" if a is None else np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def fingerprint_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changed between two fingerprints, in words (empty when the data is the same)."""
    changed = [
        f"{key} {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}"
        for key in ("rows", "features", "classes")
        if old.get(key) != new.get(key)
    ]
    scaled = "scaling" in old and "scaling" in new and old["scaling"] != new["scaling"]  # older studies have none
    if not changed and (old.get("sha256") != new.get("sha256") or scaled):
        changed.append("content (same shape and classes, other values)")
    return changed
