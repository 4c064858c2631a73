"""Datasets: loaders for the bundled and file-based data sets, checks on features and labels, splits.

Everything a user can get wrong here raises ``DataError`` with a one-line message that names the
file, column, row or value at fault. Loaded data is a ``Dataset`` (features, labels encoded as
0..C-1, the original class values); ``load_dataset`` returns a ``DatasetBundle`` so that data sets
with an official test split (mnist, mnist1d) keep it.
"""

from __future__ import annotations

import difflib
import gzip
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from caviar.data.cache import cached, digest, package_version
from caviar.data.target import CLASSIFICATION, REGRESSION, TASKS, check_regression_target, infer_task
from caviar.errors import DataError

IDX_LABELS_MAGIC = 0x00000801
IDX_IMAGES_MAGIC = 0x00000803

#: The four standard MNIST files, by part.
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

#: Version of the split rule (``_split_index``): cached splits made by another rule are not reused.
SPLIT_RULE = 1

#: Seed of the canonical MNIST-1D (the one its published accuracies refer to).
MNIST1D_SEED = 42


# ----------------------------------------------------------------------------------------------
# Containers
# ----------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Features ``X`` (n, d) float and a target ``y`` (n,): for classification int64 codes 0..C-1 and
    what the codes stand for, for regression (``task``) float64 values and no classes.

    ``classes[c]`` is the original label of code ``c`` (strings, ints, ...), so predictions map back
    with ``decode``. ``classes`` is kept whole by ``subset``: a split never loses a class code.
    """

    X: np.ndarray
    y: np.ndarray
    name: str
    classes: np.ndarray
    feature_names: list[str] | None = None
    task: str = CLASSIFICATION

    def __post_init__(self) -> None:
        if self.X.ndim != 2:
            raise DataError(f"dataset '{self.name}': X must be 2-D (n, d), got shape {self.X.shape}")
        if self.task not in TASKS:
            raise DataError(f"dataset '{self.name}': task {self.task!r} is not one of {', '.join(TASKS)}")
        want = np.int64 if self.task == CLASSIFICATION else np.float64
        if self.y.ndim != 1 or self.y.dtype != want:
            got = f"{self.y.dtype} {self.y.shape}"
            what = "int64 codes" if self.task == CLASSIFICATION else "float64 values (a regression's target)"
            raise DataError(f"dataset '{self.name}': y must be 1-D {what}, got {got}")
        if len(self.X) != len(self.y):
            raise DataError(f"dataset '{self.name}': X has {len(self.X)} rows but y has {len(self.y)} labels")
        if self.feature_names is not None and len(self.feature_names) != self.X.shape[1]:
            raise DataError(f"dataset '{self.name}': {len(self.feature_names)} names for {self.X.shape[1]} features")

    @classmethod
    def from_arrays(
        cls,
        X: Any,
        y: Any,
        name: str = "arrays",
        feature_names: Sequence[str] | None = None,
        task: str | None = None,
    ) -> Dataset:
        """Check ``X`` (finite, 2-D, numeric) and the target ``y``: labels of any kind encoded to 0..C-1
        for classification, finite numbers for regression; ``task`` None: told from ``y``
        (caviar.data.target)."""
        X = check_features(X, feature_names)
        task = infer_task(y) if task is None else task
        if task == REGRESSION:
            codes, classes = check_regression_target(y), np.array([], dtype=np.float64)
        else:
            codes, classes = encode_labels(y)
        if len(X) != len(codes):
            raise DataError(f"X has {len(X)} rows but y has {len(codes)} labels")
        names = [str(f) for f in feature_names] if feature_names is not None else None
        return cls(X, codes, name, classes, names, task)

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_classes(self) -> int:
        return int(len(self.classes))

    @property
    def is_regression(self) -> bool:
        return self.task == REGRESSION

    def __len__(self) -> int:
        return self.n_samples

    def subset(self, index: np.ndarray, name: str | None = None) -> Dataset:
        """The rows ``index`` (a copy), with the same classes and feature names."""
        return replace(self, X=self.X[index], y=self.y[index], name=name or self.name)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Map label codes (e.g. predictions) back to the original class values."""
        return self.classes[np.asarray(codes, dtype=np.int64)]


@dataclass
class DatasetBundle:
    """What ``load_dataset`` returns: the data, and the official test split where one exists."""

    train: Dataset
    test: Dataset | None = None

    @property
    def name(self) -> str:
        return self.train.name


@dataclass
class Splits:
    """Train, validation and test parts of one data set, sharing classes and feature names."""

    train: Dataset
    validation: Dataset
    test: Dataset


# ----------------------------------------------------------------------------------------------
# Checks and label encoding
# ----------------------------------------------------------------------------------------------


def check_features(X: Any, feature_names: Sequence[str] | None = None) -> np.ndarray:
    """Return ``X`` as a finite 2-D float array (float32/float64 kept, anything else -> float64).

    Raises DataError for non-2-D input, no rows or columns, values that are not numbers, and NaN/inf
    (saying how many and where the first one is), so that bad data fails before any training.
    """
    arr = np.asarray(X)
    if arr.ndim != 2:
        hint = " (one feature? use X.reshape(-1, 1))" if arr.ndim == 1 else ""
        raise DataError(f"features must be a 2-D array (n_samples, n_features), got shape {arr.shape}{hint}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"features are empty: shape {arr.shape}")
    arr = _as_float(arr)
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        named = feature_names is not None and len(feature_names) == arr.shape[1]
        where = f"column '{feature_names[col]}'" if named and feature_names is not None else f"column {col}"
        raise DataError(
            f"features hold {int(bad.sum())} NaN/inf value(s); first at row {row}, {where} ({arr[row, col]})"
        )
    return arr


def _as_float(arr: np.ndarray) -> np.ndarray:
    """Floats as they are; ints and bools as float64; objects converted or rejected."""
    if arr.dtype in (np.float32, np.float64):
        return arr
    if arr.dtype.kind in "biuf":
        return arr.astype(np.float64)
    if arr.dtype.kind == "c":
        raise DataError("features must be real numbers, got complex values")
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError):
        pass
    for (row, col), value in np.ndenumerate(arr):
        try:
            float(value)
        except (TypeError, ValueError):
            raise DataError(f"features must be numbers; row {row}, column {col} holds {value!r}") from None
    raise DataError(f"features of dtype {arr.dtype} cannot be converted to float")


def check_labels(y: Any, n_classes: int | None = None) -> np.ndarray:
    """Return label codes as int64, checking they are whole numbers in 0..n_classes-1.

    For arbitrary labels (strings, 3/5/7, ...) use ``encode_labels`` first; this check is for codes.
    """
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(f"labels must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"labels must be integer codes 0..C-1, got dtype {arr.dtype} (encode them first)")
    if arr.dtype.kind == "f":
        _check_integer_like(arr)
    codes = arr.astype(np.int64)
    if len(codes) and codes.min() < 0:
        i = int(np.argmax(codes < 0))
        raise DataError(f"labels must be >= 0; row {i} holds {codes[i]}")
    if n_classes is not None and len(codes) and codes.max() >= n_classes:
        i = int(np.argmax(codes >= n_classes))
        raise DataError(f"labels must be < n_classes={n_classes}; row {i} holds {codes[i]}")
    return codes


def _check_integer_like(arr: np.ndarray) -> None:
    """DataError for NaN/inf or fractional values among float labels."""
    nan = ~np.isfinite(arr)
    if nan.any():
        raise DataError(f"labels hold {int(nan.sum())} NaN/inf value(s); first at row {int(np.argmax(nan))}")
    frac = arr != np.round(arr)
    if frac.any():
        i = int(np.argmax(frac))
        raise DataError(
            f"labels must be whole-number classes; row {i} holds {arr[i]} "
            '(for a regression set [data] task = "regression")'
        )


def encode_labels(y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Encode any labels to codes 0..C-1 (sorted class order); return ``(codes, classes)``.

    Strings, ints, bools and integer-like floats are accepted; integer-like floats become int classes.
    Missing values (None, NaN), fractional floats and mixed types raise DataError.
    """
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(f"labels must be 1-D, got shape {arr.shape}")
    if len(arr) == 0:
        raise DataError("labels are empty")
    if arr.dtype.kind == "f":
        _check_integer_like(arr)
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "O":
        arr = _object_labels(arr)
    try:
        classes, codes = np.unique(arr, return_inverse=True)
    except TypeError as exc:
        raise DataError(f"labels mix types that cannot be ordered ({exc})") from None
    return codes.reshape(-1).astype(np.int64), classes


def _object_labels(arr: np.ndarray) -> np.ndarray:
    """Object labels (e.g. from pandas): reject missing values, make integer-like floats ints."""
    for i, v in enumerate(arr):
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            raise DataError(f"labels hold a missing value at row {i}")
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in arr):
        floats = arr.astype(np.float64)
        _check_integer_like(floats)
        return floats.astype(np.int64)
    if all(isinstance(v, str) for v in arr):
        return arr.astype(str)
    return arr


# ----------------------------------------------------------------------------------------------
# IDX files (MNIST)
# ----------------------------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzip-compressed or raw (told apart by content, not by name).

    Labels (magic 0x00000801) come back as int64 (n,); images (magic 0x00000803) as float32
    (n, rows * cols) scaled to [0, 1] by / 255. Bad magic, truncation or a broken gzip stream raise
    DataError naming the file.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is truncated: {len(raw)} bytes, no header")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (IDX_LABELS_MAGIC, IDX_IMAGES_MAGIC):
        raise DataError(
            f"IDX file {path} has bad magic number 0x{magic:08x} "
            f"(expected 0x{IDX_LABELS_MAGIC:08x} labels or 0x{IDX_IMAGES_MAGIC:08x} images)"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated: header needs {header} bytes, file has {len(raw)}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    size = int(np.prod(dims))
    found = len(raw) - header
    if found != size:
        what = "truncated" if found < size else "corrupt (trailing bytes)"
        raise DataError(f"IDX file {path} is {what}: dims {dims} need {size} data bytes, found {found}")
    data = np.frombuffer(raw, dtype=np.uint8, count=size, offset=header)
    if magic == IDX_LABELS_MAGIC:
        return data.astype(np.int64)
    pixels = int(np.prod(dims[1:]))
    return data.reshape(dims[0], pixels).astype(np.float32) / np.float32(255.0)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic."""
    if not path.is_file():
        raise DataError(f"IDX file {path} does not exist")
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"IDX file {path} is not a valid gzip stream ({exc})") from None


# ----------------------------------------------------------------------------------------------
# Named data sets
# ----------------------------------------------------------------------------------------------


def _sklearn(loader_name: str, name: str, task: str = CLASSIFICATION) -> DatasetBundle:
    """A data set bundled inside scikit-learn's wheel; classes are its target names (none for a regression)."""
    bunch = cached("sklearn-dataset", {"loader": loader_name, "sklearn": package_version("scikit-learn")},
                   lambda: _sklearn_arrays(loader_name))  # fmt: skip
    X = check_features(bunch["data"])
    names = [str(f) for f in bunch["feature_names"]] if "feature_names" in bunch else None
    if task == REGRESSION:
        y = check_regression_target(bunch["target"])
        return DatasetBundle(Dataset(X, y, name, np.array([], dtype=np.float64), names, REGRESSION))
    y = bunch["target"].astype(np.int64)
    return DatasetBundle(Dataset(X, y, name, bunch["target_names"], names))


def _sklearn_arrays(loader_name: str) -> dict[str, np.ndarray]:
    """The arrays of one of scikit-learn's bundled data sets (names as strings: cached without pickling)."""
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader_name)()
    arrays = {"data": np.asarray(bunch.data), "target": np.asarray(bunch.target)}
    for field in ("feature_names", "target_names"):
        values = getattr(bunch, field, None)
        if values is not None:
            values = np.asarray(values)
            arrays[field] = values.astype(str) if values.dtype == object else values
    return arrays


def _mnist_dir(data_dir: str | Path | None) -> Path:
    """The directory holding the MNIST files: ``data_dir`` itself or its ``mnist/`` subfolder."""
    if data_dir is None:
        files = ", ".join(MNIST_FILES.values())
        raise DataError(f"dataset 'mnist' needs data_dir: a directory holding {files}")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"MNIST data_dir {root} is not a directory")
    if not _mnist_file(root, MNIST_FILES["train_images"]).is_file() and (root / "mnist").is_dir():
        return root / "mnist"
    return root


def _mnist_file(root: Path, gz_name: str) -> Path:
    """The file under its standard .gz name, or uncompressed without .gz when only that exists."""
    gz = root / gz_name
    plain = root / gz_name.removesuffix(".gz")
    return plain if not gz.is_file() and plain.is_file() else gz


def _load_mnist(data_dir: str | Path | None) -> DatasetBundle:
    """MNIST from the four standard IDX files: 60000 train and 10000 test images, 784 float32 pixels."""
    root = _mnist_dir(data_dir)
    paths = {part: _mnist_file(root, f) for part, f in MNIST_FILES.items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise DataError(f"MNIST data_dir {root} is missing {', '.join(missing)}")
    classes = np.arange(10, dtype=np.int64)
    parts = []
    for split in ("train", "test"):
        X = read_idx(paths[f"{split}_images"])
        y = read_idx(paths[f"{split}_labels"])
        if X.ndim != 2 or y.ndim != 1:
            raise DataError(f"MNIST files in {root} have images and labels swapped")
        if len(X) != len(y):
            raise DataError(f"MNIST {split} files in {root} hold {len(X)} images but {len(y)} labels")
        if len(y) and y.max() > 9:
            raise DataError(f"MNIST label file {paths[f'{split}_labels']} holds label {y.max()} (> 9)")
        parts.append(Dataset(X, y, "mnist" if split == "train" else "mnist-test", classes))
    return DatasetBundle(parts[0], parts[1])


def _load_mnist1d(seed: int = MNIST1D_SEED) -> DatasetBundle:
    """MNIST-1D generated offline (never its network ``get_dataset``); 4000 train / 1000 test, 40 features.

    mnist1d seeds the global ``random`` and ``np.random`` state; both are restored afterwards.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    saved = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    classes = np.arange(10, dtype=np.int64)
    train = Dataset(check_features(data["x"]), check_labels(data["y"], 10), "mnist1d", classes)
    test = Dataset(check_features(data["x_test"]), check_labels(data["y_test"], 10), "mnist1d-test", classes)
    return DatasetBundle(train, test)


_LOADERS: dict[str, Callable[[str | Path | None], DatasetBundle]] = {
    "digits": lambda _: _sklearn("load_digits", "digits"),
    "iris": lambda _: _sklearn("load_iris", "iris"),
    "wine": lambda _: _sklearn("load_wine", "wine"),
    "breast_cancer": lambda _: _sklearn("load_breast_cancer", "breast_cancer"),
    "diabetes": lambda _: _sklearn("load_diabetes", "diabetes", REGRESSION),
    "mnist": _load_mnist,
    "mnist1d": lambda _: _load_mnist1d(),
}

#: Names ``load_dataset`` knows.
DATASETS = tuple(_LOADERS)
#: The task of each named data set.
DATASET_TASKS = {name: REGRESSION if name == "diabetes" else CLASSIFICATION for name in DATASETS}


def load_dataset(name: str, data_dir: str | Path | None = None) -> DatasetBundle:
    """Load a named data set; ``data_dir`` is needed by mnist only (the folder of its IDX files).

    Returns a ``DatasetBundle``: ``train`` holds the data, ``test`` the official test split for
    mnist and mnist1d and None for the scikit-learn sets (split them with ``train_val_test_split``).
    """
    loader = _LOADERS.get(name)
    if loader is None:
        close = difflib.get_close_matches(str(name), DATASETS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise DataError(f"unknown dataset '{name}' ({hint}known: {', '.join(DATASETS)})")
    return loader(data_dir)


# ----------------------------------------------------------------------------------------------
# Tables (CSV, NPZ)
# ----------------------------------------------------------------------------------------------


#: The data file types a table is read from (``.csv.gz`` is a gzip-compressed CSV).
TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".npz", ".npy")


def table_suffix(path: str | Path) -> str | None:
    """The table type of ``path`` (one of TABLE_SUFFIXES, lower case), None for any other file."""
    name = Path(path).name.lower()
    return next((s for s in sorted(TABLE_SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def load_table(path: str | Path, label: str = "label", task: str | None = None) -> Dataset:
    """Load a labelled table from CSV (header row; plain or .csv.gz), parquet, NPZ or NPY.

    CSV and parquet: every column but ``label`` is a numeric feature. NPZ: either arrays ``X`` (n, d)
    and ``y`` (n,) (``label`` is then unused; an optional ``feature_names`` array names the columns),
    or one 1-D array per column, ``label`` among them. NPY: a structured array (named columns, as
    NPZ's) or a 2-D numeric array whose LAST column is the label. Labels of any kind are encoded
    to 0..C-1 for classification; a regression's target is a number per row. ``task`` None: told
    from the target (caviar.data.target).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    kind = table_suffix(path)
    if kind == ".npz":
        return _load_npz(path, label, task)
    if kind == ".npy":
        return _load_npy(path, label, task)
    if kind in (".csv", ".csv.gz"):
        return _load_csv(path, label, task)
    if kind == ".parquet":
        return _load_parquet(path, label, task)
    raise DataError(f"data file {path} has an unsupported type (expected {', '.join(TABLE_SUFFIXES)})")


def target_task(path: str | Path, label: str = "label") -> str:
    """The task a data file's target is for (caviar.data.target's rule), reading only its target where
    the format allows (a CSV's or parquet's label column, an NPZ's ``y``); a one-line DataError when
    the file cannot be read, lacks the label or its target cannot tell."""
    path = Path(path)
    kind = table_suffix(path)
    y: Any = None
    try:
        if kind in (".csv", ".csv.gz"):
            import pandas as pd

            header = pd.read_csv(path, nrows=0).columns
            if label in header:
                y = pd.read_csv(path, usecols=[label])[label].to_numpy()
        elif kind == ".parquet":
            import pyarrow.parquet as pq

            if label in pq.read_schema(path).names:
                y = pq.read_table(path, columns=[label]).column(label).to_numpy(zero_copy_only=False)
        elif kind == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                key = "y" if "X" in npz.files and "y" in npz.files else label
                y = npz[key] if key in npz.files else None
    except Exception:  # unreadable: the full load below says why, in its own words
        y = None
    if y is None:
        return load_table(path, label).task
    try:
        return infer_task(y)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def _load_csv(path: Path, label: str, task: str | None = None) -> Dataset:
    """A CSV with a header row, read by pandas (gzip told by the name)."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DataError(f"cannot read CSV {path}: {str(exc).strip().splitlines()[0]}") from None
    return load_frame(frame, label, where=str(path), name=_stem(path), task=task)


def _load_parquet(path: Path, label: str, task: str | None = None) -> Dataset:
    """A parquet file, read by pandas with pyarrow (the ``parquet`` extra)."""
    import pandas as pd

    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise DataError(f"reading {path} needs pyarrow: pip install 'caviar[parquet]'") from None
    try:
        frame = pd.read_parquet(path, engine="pyarrow")
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read parquet {path}: {str(exc).strip().splitlines()[0]}") from None
    return load_frame(frame, label, where=str(path), name=_stem(path), task=task)


def _load_npy(path: Path, label: str, task: str | None = None) -> Dataset:
    """An NPY: named columns (a structured array) or a 2-D array whose last column is the label."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read NPY {path}: {exc}") from None
    if arr.dtype.names:
        return _from_columns({n: arr[n] for n in arr.dtype.names}, label, path, task=task)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise DataError(f"NPY {path} must be 2-D with the label as its last column, got shape {arr.shape}")
    return _checked(arr[:, :-1], arr[:, -1], path, None, task=task)


def _stem(path: Path) -> str:
    """The file's name without its table suffix (``data.csv.gz`` -> ``data``)."""
    kind = table_suffix(path) or path.suffix
    return path.name[: len(path.name) - len(kind)]


def load_frame(
    frame: Any, label: str = "label", where: str = "DataFrame", name: str = "dataframe", task: str | None = None
) -> Dataset:
    """A Dataset from a pandas DataFrame: ``label`` names the label column, every other column is a
    numeric feature (its name kept). Text or missing values are a one-line DataError."""
    columns = {str(c): frame[c].to_numpy() for c in frame.columns}
    if len(columns) != len(frame.columns):
        raise DataError(f"{where}: column names must be unique as text")
    return _from_columns(columns, label, where, name, task)


def in_memory(data: Any, label: str | None = None, name: str = "arrays", task: str | None = None) -> Dataset:
    """Data given in memory, checked: a pandas DataFrame (``label`` names its label column, default
    'label'), a pair ``(X, y)`` of arrays (X may be a DataFrame: its column names are kept), or a Dataset.
    ``task`` None: told from the target (caviar.data.target)."""
    if isinstance(data, Dataset):
        if task is not None and data.task != task:
            raise DataError(f"data in memory: the Dataset is for {data.task}, the study for {task}")
        return data
    if hasattr(data, "columns") and hasattr(data, "to_numpy"):
        return load_frame(data, label or "label", name="dataframe", task=task)
    if isinstance(data, tuple | list) and len(data) == 2:
        X, y = data
        names = [str(c) for c in X.columns] if hasattr(X, "columns") else None
        if hasattr(X, "columns"):
            for c in X.columns:
                _check_numeric_column(X[c].to_numpy(), str(c), "X")
        try:
            return Dataset.from_arrays(np.asarray(X), np.asarray(y), name=name, feature_names=names, task=task)
        except DataError as exc:
            raise DataError(f"data in memory: {exc}") from None
    raise DataError(f"data in memory must be a DataFrame or a pair (X, y), got {type(data).__name__}")


def _load_npz(path: Path, label: str, task: str | None = None) -> Dataset:
    """An NPZ holding ``X`` and ``y``, or one 1-D array per column."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read NPZ {path}: {exc}") from None
    if "X" in arrays and "y" in arrays:
        names = [str(n) for n in arrays["feature_names"]] if "feature_names" in arrays else None
        return _checked(arrays["X"], arrays["y"], path, names, task=task)
    if len(arrays) == 1 and next(iter(arrays.values())).dtype.names:
        table = next(iter(arrays.values()))
        arrays = {n: table[n] for n in table.dtype.names}
    bad = [k for k, v in arrays.items() if v.ndim != 1]
    if bad:
        raise DataError(f"NPZ {path} must hold arrays 'X' and 'y' or 1-D columns; '{bad[0]}' is not 1-D")
    return _from_columns(arrays, label, path, task=task)


def _from_columns(
    columns: dict[str, np.ndarray], label: str, path: Path | str, name: str | None = None, task: str | None = None
) -> Dataset:
    """Split named columns into numeric features and the label column."""
    if label not in columns:
        raise DataError(f"label column '{label}' not in {path}; columns: {', '.join(columns)}")
    names = [c for c in columns if c != label]
    if not names:
        raise DataError(f"{path} has no feature columns besides the label '{label}'")
    for column in names:
        _check_numeric_column(columns[column], column, path)
    X = np.column_stack([columns[n].astype(np.float64) for n in names])
    return _checked(X, columns[label], path, names, name, task)


def _check_numeric_column(col: np.ndarray, name: str, path: Path | str) -> None:
    """DataError naming a feature column that holds text, missing values or other non-numbers."""
    if col.dtype.kind in "biuf":
        return
    for i, value in enumerate(col):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            raise DataError(f"feature column '{name}' in {path} has a missing value at row {i}")
        try:
            float(value)
        except (TypeError, ValueError):
            raise DataError(
                f"feature column '{name}' in {path} is not numeric (holds {value!r}); encode it as numbers"
            ) from None


def _checked(
    X: Any, y: Any, path: Path | str, names: list[str] | None, name: str | None = None, task: str | None = None
) -> Dataset:
    """A Dataset from a file's arrays, with the file named in any error."""
    try:
        return Dataset.from_arrays(X, y, name=name or Path(path).stem, feature_names=names, task=task)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


# ----------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------


def train_val_test_split(
    data: Dataset | DatasetBundle, validation_fraction: float, test_fraction: float = 0.2, seed: int = 0
) -> Splits:
    """Stratified train / validation / test split, the same for the same seed.

    Fractions are of the whole data set. When ``data`` is a bundle with an official test split
    (mnist, mnist1d) that split is the test set, ``test_fraction`` is ignored and the validation
    fraction is taken from the training data. Stratification falls back to a plain shuffled split
    when a class is too small to appear in every part.
    """
    bundle = data if isinstance(data, DatasetBundle) else DatasetBundle(data)
    full = bundle.train
    _check_fraction("validation_fraction", validation_fraction)
    if bundle.test is not None:
        test = bundle.test
        rest = full
    else:
        _check_fraction("test_fraction", test_fraction)
        if validation_fraction + test_fraction >= 1:
            raise DataError(
                f"validation_fraction + test_fraction must be < 1, got {validation_fraction + test_fraction}"
            )
        rest, test = _split(full, _count(test_fraction, len(full)), seed, 0, "test")
    train, val = _split(rest, _count(validation_fraction, len(full)), seed, 1, "validation")
    return Splits(train, val, test)


def _check_fraction(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise DataError(f"{name} must be in [0, 1), got {value}")


def _count(fraction: float, n: int) -> int:
    """Rows for a fraction of n: rounded, but at least one when the fraction is positive."""
    return 0 if fraction == 0 else max(1, round(fraction * n))


def _split(ds: Dataset, n_out: int, seed: int, stream: int, part: str) -> tuple[Dataset, Dataset]:
    """Split off ``n_out`` rows of ``ds`` (stratified when possible) as the ``part`` data set."""
    index = np.arange(len(ds))
    if n_out == 0:
        return ds, ds.subset(index[:0], f"{ds.name}-{part}")
    if n_out >= len(ds):
        raise DataError(
            f"dataset '{ds.name}' has {len(ds)} rows: too few to split off {n_out} for {part} and still train"
        )
    state = int(np.random.SeedSequence(int(seed), spawn_key=(0x5917, stream)).generate_state(1)[0])
    key = {"rule": SPLIT_RULE, "sklearn": package_version("scikit-learn"), "rows": len(ds), "out": n_out,
           "state": state, "stratify": None if ds.is_regression else digest(ds.y)}  # fmt: skip
    parts = cached("split", key, lambda: _split_index(len(ds), n_out, state, None if ds.is_regression else ds.y))
    return ds.subset(parts["keep"]), ds.subset(parts["out"], f"{ds.name}-{part}")


def _split_index(n: int, n_out: int, state: int, stratify: np.ndarray | None) -> dict[str, np.ndarray]:
    """Rows kept and rows split off (each sorted): scikit-learn's shuffled split, stratified by
    ``stratify`` unless a class is too small to appear in both parts."""
    from sklearn.model_selection import train_test_split

    index = np.arange(n)
    if stratify is None:  # a continuous target has no classes to stratify by
        keep, out = train_test_split(index, test_size=n_out, random_state=state)
    else:
        try:
            keep, out = train_test_split(index, test_size=n_out, random_state=state, stratify=stratify)
        except ValueError:
            keep, out = train_test_split(index, test_size=n_out, random_state=state)
    return {"keep": np.sort(keep), "out": np.sort(out)}
