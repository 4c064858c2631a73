"""Data made ready for training: loaded, split, standardized on the training part only, then checked.

The checks (caviar.data.checks) run on the arrays as training sees them: cast to the training dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caviar.data import Standardizer, load_dataset, load_table, train_val_test_split
from caviar.data import standardize as standardize_splits
from caviar.data.checks import as_training_dtype, check_trainable, fingerprint
from caviar.data.datasets import Dataset, DatasetBundle
from caviar.errors import DataError


@dataclass
class PreparedData:
    """Train/validation/test arrays (standardized if asked), labels as codes 0..C-1."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: np.ndarray
    standardizer: Standardizer | None
    name: str

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> int:
        return int(len(self.classes))

    def fingerprint(self) -> dict:
        """Rows, features, classes and a content hash of every part (what a resumed study compares)."""
        parts = [(self.X_train, self.y_train), (self.X_val, self.y_val), (self.X_test, self.y_test)]
        return fingerprint(parts, self.classes)


def prepare_data(
    dataset: str | None = None,
    path: str | Path | None = None,
    label: str = "label",
    data_dir: str | Path | None = None,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
    dtype: str = "float32",
    source: Dataset | None = None,
    metric: str | None = None,
) -> PreparedData:
    """Load a named data set or a data file (or take ``source``, data given in memory) and split it,
    the same way for the same seed.

    Refused with a DataError: values not finite in ``dtype``, a training part of under 2 rows or one
    class, and no validation part when ``metric`` is a validation metric.
    """
    data: Dataset | DatasetBundle
    if source is not None and dataset is None and path is None:
        data = source
    elif dataset is not None and path is None:
        data = load_dataset(dataset, data_dir)
    elif path is not None and dataset is None:
        data = load_table(path, label)
    else:
        raise DataError("give either a dataset name or a data file path, not both or neither")
    name = data.name
    for part in (data.train, data.test) if isinstance(data, DatasetBundle) else (data,):
        if part is not None:  # the raw values as the training dtype holds them, before any scaling
            as_training_dtype(part.X, dtype, part.feature_names, where=f"{name}: ")
    splits = train_val_test_split(data, validation_fraction, test_fraction, seed)
    scaler = None
    if standardize:
        splits, scaler = standardize_splits(splits)  # statistics of the training part only

    def arrays(ds) -> np.ndarray:
        return as_training_dtype(ds.X, dtype, ds.feature_names, where=f"{name}: ")

    tr, va, te = splits.train, splits.validation, splits.test
    check_trainable(tr.y, len(va.y), metric, where=f"{name}: ")
    return PreparedData(arrays(tr), tr.y, arrays(va), va.y, arrays(te), te.y, tr.classes, scaler, tr.name)
