"""Standardization: zero mean and unit variance per feature, with statistics from the training split only.

A regression's target follows the same rule (``fit_target_scaler``, ``scale_target``,
``unscale_target``: one place for both ``caviar.Regressor`` and regression studies): standardized on
the training part with float64 statistics, predictions mapped back with the same two numbers.

Fitting on the training split alone keeps validation and test data unseen (no leakage); the same
mean and std are then applied to every split and stored with the model for prediction time.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from caviar.data.datasets import Dataset, Splits, check_features
from caviar.errors import DataError

_CHUNK = 8192


class Standardizer:
    """Per-feature ``(X - mean) / std``; a constant feature gets std 1, so it maps to 0, never NaN.

    Statistics are computed in float64 (two-pass variance, population std); ``transform`` returns
    the input's float dtype (float32 stays float32; integer input becomes float64).
    """

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> None:
        self.mean = mean
        self.std = std

    @property
    def fitted(self) -> bool:
        return self.mean is not None and self.std is not None

    def _stats(self, what: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std), or DataError saying ``what`` needs a fitted standardizer."""
        if self.mean is None or self.std is None:
            raise DataError(what)
        return self.mean, self.std

    def fit(self, X: Any) -> Standardizer:
        """Learn mean and std per feature from the training features ``X`` (n, d)."""
        X = check_features(X)
        mean = X.mean(axis=0, dtype=np.float64)
        sq = np.zeros_like(mean)
        for start in range(0, len(X), _CHUNK):  # chunks: no full float64 copy of a large X
            sq += ((X[start : start + _CHUNK].astype(np.float64) - mean) ** 2).sum(axis=0)
        std = np.sqrt(sq / len(X))
        constant = np.ptp(X, axis=0) == 0
        std[constant | (std == 0)] = 1.0
        self.mean, self.std = mean, std
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Standardize ``X`` with the fitted statistics, keeping its float dtype."""
        mean, std = self._stats("Standardizer is not fitted: call fit(X_train) first")
        X = np.asarray(X)
        if X.ndim == 2 and X.shape[0] == 0 and X.shape[1] == len(mean):
            return X.astype(X.dtype if X.dtype in (np.float32, np.float64) else np.float64)  # empty split
        X = check_features(X)
        if X.shape[1] != len(mean):
            raise DataError(f"Standardizer was fitted on {len(mean)} features, got {X.shape[1]}")
        dtype = X.dtype
        return (X - mean.astype(dtype)) / std.astype(dtype)

    def fit_transform(self, X: Any) -> np.ndarray:
        return self.fit(X).transform(X)

    def inverse_transform(self, Z: Any) -> np.ndarray:
        """Map standardized values back to the original units."""
        mean, std = self._stats("Standardizer is not fitted: call fit(X_train) first")
        Z = np.asarray(Z)
        dtype = Z.dtype if Z.dtype in (np.float32, np.float64) else np.float64
        return Z.astype(dtype) * std.astype(dtype) + mean.astype(dtype)

    def to_dict(self) -> dict[str, np.ndarray]:
        """The statistics as float64 arrays ``mean`` and ``std`` (for model files)."""
        mean, std = self._stats("Standardizer is not fitted: nothing to save")
        return {"mean": mean.copy(), "std": std.copy()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardizer:
        """Rebuild from ``to_dict``'s output; DataError when arrays are missing or malformed."""
        missing = [k for k in ("mean", "std") if k not in d]
        if missing:
            raise DataError(f"standardizer state lacks {', '.join(missing)}")
        mean = np.asarray(d["mean"], dtype=np.float64).reshape(-1)
        std = np.asarray(d["std"], dtype=np.float64).reshape(-1)
        if mean.shape != std.shape:
            raise DataError(f"standardizer mean has {mean.size} values but std has {std.size}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise DataError("standardizer state holds NaN/inf or a non-positive std")
        return cls(mean, std)


def standardize(splits: Splits) -> tuple[Splits, Standardizer]:
    """Fit a Standardizer on ``splits.train`` and apply it to all three parts."""
    scaler = Standardizer().fit(splits.train.X)

    def apply(ds: Dataset) -> Dataset:
        X = scaler.transform(ds.X)
        return replace(ds, X=X)

    return Splits(apply(splits.train), apply(splits.validation), apply(splits.test)), scaler


def fit_target_scaler(y_train: Any) -> Standardizer:
    """The target's mean and std on the training part (a constant target gets std 1)."""
    return Standardizer().fit(np.asarray(y_train, dtype=np.float64).reshape(-1, 1))


def scale_target(scaler: Standardizer, y: Any, dtype: Any = np.float64) -> np.ndarray:
    """``(y - mean) / std`` in ``dtype``: what the network is trained on."""
    assert scaler.mean is not None and scaler.std is not None, "a fitted target scaler"
    y64 = np.asarray(y, dtype=np.float64).reshape(-1)
    return ((y64 - float(scaler.mean[0])) / float(scaler.std[0])).astype(np.dtype(dtype))


def unscale_target(scaler: Standardizer, outputs: Any) -> np.ndarray:
    """Network outputs (..., 1) or (...) mapped back to the target's units, float64 (``out * std + mean``)."""
    assert scaler.mean is not None and scaler.std is not None, "a fitted target scaler"
    out = np.asarray(outputs, dtype=np.float64)
    if out.ndim >= 1 and out.shape[-1] == 1 and out.ndim > 1:
        out = out[..., 0]
    return out * float(scaler.std[0]) + float(scaler.mean[0])
