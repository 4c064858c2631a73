"""Data: named data sets and tables, feature and label checks, splits, standardization, mini-batches."""

from caviar.data.batches import iterate_minibatches, minibatch_indices
from caviar.data.datasets import (
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
    train_val_test_split,
)
from caviar.data.preprocess import Standardizer, standardize

__all__ = [
    "DATASETS",
    "TABLE_SUFFIXES",
    "Dataset",
    "DatasetBundle",
    "Splits",
    "Standardizer",
    "check_features",
    "check_labels",
    "encode_labels",
    "iterate_minibatches",
    "in_memory",
    "load_dataset",
    "load_frame",
    "load_table",
    "minibatch_indices",
    "read_idx",
    "standardize",
    "train_val_test_split",
]
