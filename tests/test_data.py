"""Tests of caviar.data: loaders, file formats, checks, splits, standardization, mini-batches."""

from __future__ import annotations

import gzip
import random
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from caviar.data import (
    DATASETS,
    Dataset,
    DatasetBundle,
    Standardizer,
    check_features,
    check_labels,
    encode_labels,
    iterate_minibatches,
    load_dataset,
    load_table,
    minibatch_indices,
    read_idx,
    standardize,
    train_val_test_split,
)
from caviar.errors import DataError
from caviar.seeding import data_rng
from shared_data import mnist_dir

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---------------------------------------------------------------------------------------------
# Named data sets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shape", "n_classes"),
    [
        ("digits", (1797, 64), 10),
        ("iris", (150, 4), 3),
        ("wine", (178, 13), 3),
        ("breast_cancer", (569, 30), 2),
    ],
)
def test_bundled_datasets_load(name: str, shape: tuple[int, int], n_classes: int) -> None:
    bundle = load_dataset(name)
    ds = bundle.train
    assert bundle.test is None
    assert ds.X.shape == shape
    assert ds.y.dtype == np.int64
    assert ds.n_classes == n_classes
    assert set(np.unique(ds.y)) == set(range(n_classes))
    assert ds.feature_names is not None and len(ds.feature_names) == shape[1]
    assert np.isfinite(ds.X).all()


def test_iris_classes_map_back() -> None:
    ds = load_dataset("iris").train
    assert list(ds.classes) == ["setosa", "versicolor", "virginica"]
    assert list(ds.decode(np.array([2, 0]))) == ["virginica", "setosa"]


def test_unknown_dataset_suggests_the_closest_name() -> None:
    expected = r"unknown dataset 'digitz' \(did you mean 'digits'\? known: digits, iris, wine"
    with pytest.raises(DataError, match=expected):
        load_dataset("digitz")


@pytest.fixture(scope="module")
def mnist() -> DatasetBundle:
    return load_dataset("mnist", data_dir=mnist_dir())


def test_mnist_shapes_counts_and_mean(mnist: DatasetBundle) -> None:
    assert mnist.train.X.shape == (60000, 784)
    assert mnist.test is not None and mnist.test.X.shape == (10000, 784)
    assert mnist.train.X.dtype == np.float32
    assert mnist.train.X.min() >= 0.0 and mnist.train.X.max() <= 1.0
    assert np.bincount(mnist.train.y).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(mnist.test.y).tolist() == MNIST_TEST_COUNTS
    assert abs(float(mnist.train.X.mean(dtype=np.float64)) - 0.1307) < 1e-3


def test_mnist_split_keeps_official_test(mnist: DatasetBundle) -> None:
    splits = train_val_test_split(mnist, validation_fraction=0.1, test_fraction=0.3, seed=0)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (54000, 6000, 10000)
    assert splits.test is mnist.test


def test_mnist_needs_data_dir() -> None:
    with pytest.raises(DataError, match="needs data_dir"):
        load_dataset("mnist")


def test_mnist_missing_directory_and_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere.*not a directory"):
        load_dataset("mnist", data_dir=tmp_path / "nowhere")
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match=f"{tmp_path}.*missing train-labels-idx1-ubyte.gz"):
        load_dataset("mnist", data_dir=tmp_path)


def test_mnist_from_small_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("t10k", 3)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8), gz=False)
    bundle = load_dataset("mnist", data_dir=tmp_path)
    assert bundle.train.X.shape == (5, 784) and bundle.test is not None and bundle.test.X.shape == (3, 784)


def test_mnist1d_shapes_and_global_rng_untouched() -> None:
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    bundle = load_dataset("mnist1d")
    assert np.array_equal(np.random.get_state()[1], np_state) and random.getstate() == py_state
    assert bundle.train.X.shape == (4000, 40)
    assert bundle.test is not None and bundle.test.X.shape == (1000, 40)
    assert bundle.train.n_classes == 10 and set(np.unique(bundle.train.y)) == set(range(10))
    splits = train_val_test_split(bundle, 0.2, seed=3)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (3200, 800, 1000)


def test_datasets_listed() -> None:
    assert set(DATASETS) == {"digits", "iris", "wine", "breast_cancer", "diabetes", "mnist", "mnist1d"}


# ---------------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------------


def _write_idx(path: Path, data: np.ndarray, gz: bool = True, magic: int | None = None) -> Path:
    magic = magic if magic is not None else (0x801 if data.ndim == 1 else 0x803)
    raw = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in data.shape) + data.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def test_read_idx_images_and_labels(tmp_path: Path) -> None:
    images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 256
    X = read_idx(_write_idx(tmp_path / "img.gz", images.astype(np.uint8)))
    assert X.shape == (2, 784) and X.dtype == np.float32
    np.testing.assert_allclose(X, images.reshape(2, -1) / 255.0, rtol=1e-6)
    y = read_idx(_write_idx(tmp_path / "lab", np.array([3, 1, 4], np.uint8), gz=False))
    assert y.tolist() == [3, 1, 4] and y.dtype == np.int64


def test_read_idx_bad_magic(tmp_path: Path) -> None:
    path = _write_idx(tmp_path / "bad.gz", np.zeros(4, np.uint8), magic=0x0802)
    with pytest.raises(DataError, match=r"bad\.gz has bad magic number 0x00000802"):
        read_idx(path)


def test_read_idx_truncated(tmp_path: Path) -> None:
    path = tmp_path / "short-images"
    raw = struct.pack(">IIII", 0x803, 10, 28, 28) + bytes(100)
    path.write_bytes(raw)
    with pytest.raises(DataError, match="short-images is truncated"):
        read_idx(path)
    path.write_bytes(raw[:9])
    with pytest.raises(DataError, match="short-images is truncated"):
        read_idx(path)


def test_read_idx_broken_gzip(tmp_path: Path) -> None:
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(struct.pack(">II", 0x801, 3) + bytes(3))[:-6])
    with pytest.raises(DataError, match="broken.gz"):
        read_idx(path)


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def test_csv_with_string_labels(tmp_path: Path) -> None:
    path = tmp_path / "flowers.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0, 1, 0, 1], "kind": ["y", "x", "y", "z"]}).to_csv(path, index=False)
    ds = load_table(path, label="kind")
    assert ds.X.shape == (4, 2) and ds.feature_names == ["a", "b"]
    assert list(ds.classes) == ["x", "y", "z"] and ds.y.tolist() == [1, 0, 1, 2]
    assert ds.name == "flowers"


def test_csv_missing_label_column_lists_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [1, 2], "b": [3, 4]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="label column 'target' not in .*t.csv; columns: a, b"):
        load_table(path, label="target")


def test_csv_non_numeric_feature_named(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [1, 2], "color": ["red", "blue"], "label": [0, 1]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="feature column 'color'.*not numeric"):
        load_table(path)


def test_csv_nan_feature_names_column(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n1,2,0\n3,,1\n")
    with pytest.raises(DataError, match="1 NaN/inf value.*row 1, column 'b'"):
        load_table(path)


def test_missing_file_and_unsupported_type(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.csv does not exist"):
        load_table(tmp_path / "nope.csv")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match="unsupported type"):
        load_table(tmp_path / "x.json")


def test_npz_X_and_y(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.ones((3, 2), np.float32), y=np.array([5, 7, 5]))
    ds = load_table(path)
    assert ds.X.dtype == np.float32 and ds.y.tolist() == [0, 1, 0] and ds.classes.tolist() == [5, 7]


def test_npz_columns_with_label(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, f1=np.arange(3.0), f2=np.arange(3), cls=np.array(["b", "a", "b"]))
    ds = load_table(path, label="cls")
    assert ds.feature_names == ["f1", "f2"] and ds.y.tolist() == [1, 0, 1]
    with pytest.raises(DataError, match="columns: f1, f2, cls"):
        load_table(path, label="label")


def test_npz_structured_array(tmp_path: Path) -> None:
    table = np.array([(1.0, 2), (3.0, 1)], dtype=[("x", "f8"), ("label", "i8")])
    path = tmp_path / "s.npz"
    np.savez(path, table=table)
    ds = load_table(path)
    assert ds.X.tolist() == [[1.0], [3.0]] and ds.classes.tolist() == [1, 2]


# ---------------------------------------------------------------------------------------------
# Feature and label checks
# ---------------------------------------------------------------------------------------------


def test_check_features_nan_and_inf_located() -> None:
    X = np.zeros((4, 3))
    X[2, 1] = np.nan
    X[3, 0] = np.inf
    with pytest.raises(DataError, match="2 NaN/inf value.*first at row 2, column 1"):
        check_features(X)


def test_check_features_shapes_and_types() -> None:
    with pytest.raises(DataError, match="2-D"):
        check_features(np.zeros(3))
    with pytest.raises(DataError, match="row 1, column 0 holds 'x'"):
        check_features(np.array([[1], ["x"]], dtype=object))
    assert check_features(np.array([[1, 2]])).dtype == np.float64
    assert check_features(np.zeros((1, 2), np.float32)).dtype == np.float32
    assert check_features(np.array([[1, "2"]], dtype=object)).tolist() == [[1.0, 2.0]]


def test_check_labels() -> None:
    assert check_labels(np.array([0.0, 2.0, 1.0]), n_classes=3).tolist() == [0, 2, 1]
    with pytest.raises(DataError, match="NaN"):
        check_labels(np.array([0.0, np.nan]))
    with pytest.raises(DataError, match="row 1 holds 1.5"):
        check_labels(np.array([0.0, 1.5]))
    with pytest.raises(DataError, match="< n_classes=3; row 2 holds 3"):
        check_labels(np.array([0, 1, 3]), n_classes=3)
    with pytest.raises(DataError, match=">= 0"):
        check_labels(np.array([0, -1]))
    with pytest.raises(DataError, match="encode them first"):
        check_labels(np.array(["a", "b"]))


def test_encode_labels_kinds() -> None:
    codes, classes = encode_labels(np.array([3.0, 7.0, 3.0]))
    assert codes.tolist() == [0, 1, 0] and classes.tolist() == [3, 7] and classes.dtype == np.int64
    codes, classes = encode_labels(pd.Series(["cat", "dog", "cat"]).to_numpy(dtype=object))
    assert codes.tolist() == [0, 1, 0] and classes.tolist() == ["cat", "dog"]
    with pytest.raises(DataError, match="missing value at row 1"):
        encode_labels(np.array(["a", None], dtype=object))
    with pytest.raises(DataError, match="mix types"):
        encode_labels(np.array([1, "a"], dtype=object))


def test_dataset_from_arrays_checks_lengths() -> None:
    with pytest.raises(DataError, match="3 rows but y has 2"):
        Dataset.from_arrays(np.zeros((3, 2)), [0, 1])


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------


def test_split_stratified_deterministic_and_disjoint() -> None:
    ds = load_dataset("digits").train
    a = train_val_test_split(ds, 0.2, 0.2, seed=7)
    b = train_val_test_split(ds, 0.2, 0.2, seed=7)
    c = train_val_test_split(ds, 0.2, 0.2, seed=8)
    assert np.array_equal(a.validation.X, b.validation.X) and np.array_equal(a.test.y, b.test.y)
    assert not np.array_equal(a.validation.X, c.validation.X)
    assert len(a.train) + len(a.validation) + len(a.test) == len(ds)
    assert len(a.validation) == round(0.2 * len(ds)) == len(a.test)
    rows = {r.tobytes() for part in (a.train, a.validation, a.test) for r in part.X}
    assert len(rows) == len({r.tobytes() for r in ds.X})
    full = np.bincount(ds.y) / len(ds)
    for part in (a.train, a.validation, a.test):
        assert np.abs(np.bincount(part.y, minlength=10) / len(part) - full).max() < 0.02
        assert part.n_classes == 10


def test_split_zero_validation_and_bad_fractions() -> None:
    ds = load_dataset("iris").train
    s = train_val_test_split(ds, 0.0, 0.2, seed=0)
    assert len(s.validation) == 0 and s.validation.X.shape == (0, 4) and len(s.train) == 120
    with pytest.raises(DataError, match="< 1"):
        train_val_test_split(ds, 0.5, 0.5, seed=0)
    with pytest.raises(DataError, match=r"validation_fraction must be in \[0, 1\)"):
        train_val_test_split(ds, -0.1, 0.2, seed=0)


def test_split_tiny_class_falls_back_to_plain_shuffle() -> None:
    ds = Dataset.from_arrays(np.arange(20.0).reshape(10, 2), [0] * 9 + [1])
    s = train_val_test_split(ds, 0.2, 0.2, seed=0)
    assert (len(s.train), len(s.validation), len(s.test)) == (6, 2, 2)


# ---------------------------------------------------------------------------------------------
# Standardization
# ---------------------------------------------------------------------------------------------


def test_standardizer_uses_train_stats_only() -> None:
    train = np.array([[0.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    test = np.array([[100.0, 7.0]])
    scaler = Standardizer().fit(train)
    np.testing.assert_allclose(scaler.mean, [2.0, 5.0])
    np.testing.assert_allclose(scaler.std, [np.sqrt(8 / 3), 1.0])
    np.testing.assert_allclose(scaler.transform(test), [[98 / np.sqrt(8 / 3), 2.0]])
    z = scaler.transform(train)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(z[:, 1], 0.0)
    np.testing.assert_allclose(scaler.inverse_transform(z), train, atol=1e-12)


def test_standardizer_constant_float_feature_is_safe() -> None:
    X = np.full((1000, 1), 0.1)
    z = Standardizer().fit_transform(X)
    assert np.isfinite(z).all() and np.abs(z).max() < 1e-12


def test_standardizer_preserves_float32_and_round_trips() -> None:
    X = np.random.default_rng(0).normal(3, 2, (50, 4)).astype(np.float32)
    scaler = Standardizer().fit(X)
    assert scaler.transform(X).dtype == np.float32
    back = Standardizer.from_dict(scaler.to_dict())
    np.testing.assert_array_equal(back.transform(X), scaler.transform(X))
    assert scaler.to_dict()["mean"].dtype == np.float64
    with pytest.raises(DataError, match="lacks std"):
        Standardizer.from_dict({"mean": [0.0]})
    with pytest.raises(DataError, match="fitted on 4 features, got 3"):
        scaler.transform(X[:, :3])
    with pytest.raises(DataError, match="not fitted"):
        Standardizer().transform(X)
    assert scaler.transform(X[:0]).shape == (0, 4)


def test_standardize_splits_fits_on_train() -> None:
    splits = train_val_test_split(load_dataset("wine"), 0.2, 0.2, seed=0)
    scaled, scaler = standardize(splits)
    np.testing.assert_allclose(scaler.mean, splits.train.X.mean(axis=0))
    np.testing.assert_allclose(scaled.train.X.mean(axis=0), 0, atol=1e-10)
    assert np.abs(scaled.test.X.mean(axis=0)).max() > 1e-6


# ---------------------------------------------------------------------------------------------
# Mini-batches
# ---------------------------------------------------------------------------------------------


def test_minibatches_cover_every_index_once() -> None:
    batches = minibatch_indices(1000, 64, data_rng(0))
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(1000))
    assert all(len(b) == 64 for b in batches[:-1]) and len(batches[-1]) == 1000 - 15 * 64


def test_minibatches_reshuffle_each_epoch_and_follow_seed() -> None:
    rng = data_rng(1)
    e1, e2 = (np.concatenate(minibatch_indices(100, 10, rng)) for _ in range(2))
    assert not np.array_equal(e1, e2)
    rng2 = data_rng(1)
    assert np.array_equal(np.concatenate(minibatch_indices(100, 10, rng2)), e1)
    assert np.array_equal(np.concatenate(minibatch_indices(100, 10, rng2)), e2)


def test_last_batch_of_one_joins_previous() -> None:
    assert [len(b) for b in minibatch_indices(129, 64, data_rng(0))] == [64, 65]
    assert [len(b) for b in minibatch_indices(65, 64, None, shuffle=False)] == [65]
    assert [len(b) for b in minibatch_indices(3, 1, None, shuffle=False)] == [1, 1, 1]
    assert [len(b) for b in minibatch_indices(10, 64, data_rng(0))] == [10]


def test_minibatch_errors() -> None:
    with pytest.raises(DataError, match="at least 2"):
        minibatch_indices(1, 64, data_rng(0))
    with pytest.raises(DataError, match="batch_size"):
        minibatch_indices(10, 0, data_rng(0))
    with pytest.raises(DataError, match="Generator"):
        minibatch_indices(10, 4, None)


def test_unshuffled_batches_in_order_and_iterate_views() -> None:
    X = np.arange(20.0).reshape(10, 2)
    y = np.arange(10)
    batches = minibatch_indices(10, 4, None, shuffle=False)
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    pairs = list(iterate_minibatches(X, y, batches))
    assert all(np.shares_memory(xb, X) for xb, _ in pairs)
    assert pairs[2][1].tolist() == [8, 9]
    shuffled = minibatch_indices(10, 4, data_rng(0))
    for (xb, yb), idx in zip(iterate_minibatches(X, None, shuffled), shuffled, strict=True):
        assert yb is None and np.array_equal(xb, X[idx])
