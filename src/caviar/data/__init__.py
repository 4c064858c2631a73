"""Data: named data sets and tables, feature and label checks, splits, standardization, mini-batches."""

from caviar.data.batches import iterate_minibatches, minibatch_indices
from caviar.data.datasets import (
    DATASET_TASKS,
    DATASETS,
    TABLE_SUFFIXES,
    Dataset,
    DatasetBundle,
    Splits,
    check_features,
    check_labels,
    encode_labels,
    in_memory,
    load_dataset,
    load_frame,
    load_table,
    read_idx,
    target_task,
    train_val_test_split,
)
from caviar.data.preprocess import Standardizer, fit_target_scaler, scale_target, standardize, unscale_target
from caviar.data.target import CLASSIFICATION, REGRESSION, TASKS, check_regression_target, infer_task

__all__ = [
    "CLASSIFICATION",
    "DATASETS",
    "DATASET_TASKS",
    "REGRESSION",
    "TASKS",
    "TABLE_SUFFIXES",
    "Dataset",
    "DatasetBundle",
    "Splits",
    "Standardizer",
    "check_features",
    "check_labels",
    "check_regression_target",
    "encode_labels",
    "fit_target_scaler",
    "infer_task",
    "iterate_minibatches",
    "in_memory",
    "load_dataset",
    "load_frame",
    "load_table",
    "minibatch_indices",
    "read_idx",
    "scale_target",
    "standardize",
    "target_task",
    "train_val_test_split",
    "unscale_target",
]
