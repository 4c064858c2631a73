"""Data made ready for training: loaded, split, standardized on the training part only, then checked.

The checks (caviar.data.checks) run on the arrays as training sees them: cast to the training dtype.
A regression's target is standardized on the training part too (caviar.data.preprocess's target
rule, the one ``caviar.Regressor`` follows): ``y_*`` hold what the network trains on, ``target_scaler``
maps outputs and targets back to the target's units.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caviar.data import Standardizer, load_dataset, load_table, train_val_test_split
from caviar.data import standardize as standardize_splits
from caviar.data.checks import as_training_dtype, check_trainable, fingerprint, scaling_hash
from caviar.data.datasets import Dataset, DatasetBundle
from caviar.data.preprocess import fit_target_scaler, scale_target, unscale_target
from caviar.data.target import CLASSIFICATION, REGRESSION
from caviar.errors import DataError
from caviar.metrics import softmax_rows


@dataclass
class PreparedData:
    """Train/validation/test arrays (standardized if asked), labels as codes 0..C-1; for a regression
    (``task``) the target standardized by ``target_scaler`` and no classes."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: np.ndarray
    standardizer: Standardizer | None
    name: str
    task: str = CLASSIFICATION
    target_scaler: Standardizer | None = None

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> int:
        return int(len(self.classes))

    @property
    def is_regression(self) -> bool:
        return self.task == REGRESSION

    @property
    def n_outputs(self) -> int:
        """The network's output units: one per class, or one for a regression."""
        return 1 if self.is_regression else self.n_classes

    @property
    def loss(self) -> str:
        """The trainer's loss (caviar.nn.losses.LOSSES) for this task."""
        return "squared_error" if self.is_regression else "cross_entropy"

    def targets(self, y: np.ndarray) -> np.ndarray:
        """A part's target as the metrics see it: codes, or a regression's values in its own units."""
        return y if self.target_scaler is None else unscale_target(self.target_scaler, y)

    def outputs(self, logits: np.ndarray) -> np.ndarray:
        """Network outputs (..., C) as the metrics see them: class probabilities, or predictions (...)
        in the target's units."""
        return softmax_rows(logits) if self.target_scaler is None else unscale_target(self.target_scaler, logits)

    def fingerprint(self) -> dict:
        """Rows, features, classes and a content hash of every part (what a resumed study compares), and a
        hash of the scaling statistics: standardized parts alone would not tell a column (or a regression's
        target) multiplied by 2 from the original. A regression's also names its task. (Fingerprints stored
        by earlier versions have no scaling hash; ``fingerprint_diff`` compares it only where both have one,
        so their studies resume.)"""
        parts = [(self.X_train, self.y_train), (self.X_val, self.y_val), (self.X_test, self.y_test)]
        found = {**fingerprint(parts, self.classes), "scaling": scaling_hash(self.standardizer, self.target_scaler)}
        if not self.is_regression:
            return found
        return {**found, "task": self.task}


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
    task: str | None = None,
) -> PreparedData:
    """Load a named data set or a data file (or take ``source``, data given in memory) and split it,
    the same way for the same seed. ``task``: classification or regression; None: the data set's own,
    or told from a file's target (caviar.data.target).

    Refused with a DataError: values not finite in ``dtype``, a training part of under 2 rows or one
    class, no validation part when ``metric`` is a validation metric, data of another task than ``task``.
    """
    data: Dataset | DatasetBundle
    if source is not None and dataset is None and path is None:
        data = source
    elif dataset is not None and path is None:
        data = load_dataset(dataset, data_dir)
    elif path is not None and dataset is None:
        data = load_table(path, label, task)
    else:
        raise DataError("give either a dataset name or a data file path, not both or neither")
    name = data.name
    own = data.train.task if isinstance(data, DatasetBundle) else data.task
    if task is not None and own != task:
        raise DataError(f"{name}: the data is for {own}, the study asks for {task} ([data] task)")
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
    check_trainable(tr.y, len(va.y), metric, where=f"{name}: ", task=own)
    if own == REGRESSION:
        target = fit_target_scaler(tr.y)
        # float64: the metrics map them back exactly; the loss casts them to the training dtype, as the
        # Regressor's float32 targets are
        y_tr, y_va, y_te = (scale_target(target, part.y) for part in (tr, va, te))
        return PreparedData(
            arrays(tr), y_tr, arrays(va), y_va, arrays(te), y_te, tr.classes, scaler, tr.name, REGRESSION, target
        )
    return PreparedData(arrays(tr), tr.y, arrays(va), va.y, arrays(te), te.y, tr.classes, scaler, tr.name)
