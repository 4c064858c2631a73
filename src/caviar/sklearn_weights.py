"""Sample and class weights for the estimators, as scikit-learn defines them: checked once, one-line errors.

Pure functions: ``check_sample_weight`` (the weights a user passed to ``fit``/``partial_fit``),
``class_weights`` ("balanced" or a dict, per class), ``weighted_standardizer`` (the input and target
scaling under weights, so that a weight of 2 counts a row twice there too).
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Real
from typing import Any

import numpy as np

from caviar.data.preprocess import Standardizer
from caviar.errors import DataError


def check_sample_weight(sample_weight: Any, n_samples: int) -> np.ndarray | None:
    """``sample_weight`` as float64 (n_samples,), or None when not given; a number is every sample's
    weight. DataError (a ValueError) in one line for the wrong length or shape, text, a negative,
    NaN or infinite weight, or weights that are all zero."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, Real) and not isinstance(sample_weight, bool):
        w = np.full(n_samples, float(sample_weight))
    else:
        try:
            w = np.asarray(sample_weight, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError("sample_weight must hold numbers, one weight per sample") from None
        if w.ndim != 1:
            raise DataError(f"sample_weight must be 1-D, one weight per sample; got shape {w.shape}")
        if len(w) != n_samples:
            raise DataError(f"sample_weight has {len(w)} values for {n_samples} samples")
    bad = np.flatnonzero(~np.isfinite(w))
    if bad.size:
        raise DataError(f"sample_weight holds a non-finite value ({w[bad[0]]}) at row {bad[0]}")
    neg = np.flatnonzero(w < 0)
    if neg.size:
        raise DataError(f"sample_weight holds a negative value ({w[neg[0]]}) at row {neg[0]}; weights must be >= 0")
    if not np.any(w > 0):
        raise DataError("sample_weight: every weight is zero; at least one must be positive")
    return w


def class_weights(
    class_weight: Any, classes: np.ndarray, yi: np.ndarray, sample_weight: np.ndarray | None
) -> np.ndarray:
    """The weight of each class (in the order of ``classes``) for ``class_weight``: None (all 1),
    ``"balanced"`` (scikit-learn's: total weight / (n_classes x the class's weight), counts when
    unweighted: n / (n_classes x count)), or a dict {class: weight} (classes it omits weigh 1).
    ``yi`` are the encoded labels of the training rows. DataError naming a class the dict names that
    is not among ``classes``, or a weight that is not a finite number >= 0."""
    C = len(classes)
    if class_weight is None:
        return np.ones(C)
    if isinstance(class_weight, str):  # "balanced" (the parameter constraints allow nothing else)
        counts = np.bincount(yi, weights=sample_weight, minlength=C).astype(np.float64)
        with np.errstate(divide="ignore"):
            return np.where(counts > 0, counts.sum() / (C * np.maximum(counts, 1e-300)), 0.0)
    if not isinstance(class_weight, Mapping):
        raise DataError(f"class_weight must be 'balanced', a dict or None; got {type(class_weight).__name__}")
    out = np.ones(C)
    known = {_plain(c): i for i, c in enumerate(classes)}
    for label, weight in class_weight.items():
        if _plain(label) not in known:
            raise DataError(
                f"class_weight names class {label!r}, which is not among the classes {np.asarray(classes).tolist()}"
            )
        if not isinstance(weight, Real) or isinstance(weight, bool) or not np.isfinite(float(weight)) or weight < 0:
            raise DataError(f"class_weight[{label!r}] = {weight!r}: a weight must be a finite number >= 0")
        out[known[_plain(label)]] = float(weight)
    return out


def _plain(label: Any) -> Any:
    """A label as a plain Python value (numpy scalars compare and hash as their Python values)."""
    return label.item() if isinstance(label, np.generic) else label


def combined_weights(
    class_weight: Any, classes: np.ndarray, yi: np.ndarray, sample_weight: np.ndarray | None
) -> np.ndarray | None:
    """Per-row weights: sample weight x its class's weight; None when neither is given (the unweighted
    training path, bit for bit as before weights existed)."""
    if class_weight is None:
        return sample_weight
    per_class = class_weights(class_weight, classes, yi, sample_weight)
    w = per_class[yi] if sample_weight is None else sample_weight * per_class[yi]
    if not np.any(w > 0):
        raise DataError("class_weight and sample_weight leave every sample with weight zero")
    return w


def weighted_standardizer(X: np.ndarray, w: np.ndarray | None) -> Standardizer:
    """The Standardizer of ``X`` (n, d) under row weights: weighted mean and (population) std, a
    feature constant over the rows of positive weight gets std 1; ``w`` None: ``Standardizer().fit``."""
    if w is None:
        return Standardizer().fit(X)
    X64 = np.asarray(X, dtype=np.float64)
    mean = np.average(X64, axis=0, weights=w)
    std = np.sqrt(np.average((X64 - mean) ** 2, axis=0, weights=w))
    used = X64[w > 0]
    constant = np.ptp(used, axis=0) == 0
    std[constant | (std == 0)] = 1.0
    return Standardizer(mean, std)
