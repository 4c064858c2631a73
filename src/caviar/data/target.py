"""The target of a data set: which task it is for and its checks.

One rule decides the task when the spec does not say (``[data] task``): an integer, boolean or text
target is classes; a float target with any fractional value is a regression's; a float target of whole
numbers only (``151.0``, ``1.0``) could be either, so it is refused with a line asking for ``task``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from caviar.errors import DataError
from caviar.metrics import CLASSIFICATION, REGRESSION, TASKS

__all__ = [
    "CLASSIFICATION",
    "REGRESSION",
    "TASKS",
    "check_regression_target",
    "infer_task",
]

ASK = 'set [data] task = "classification" or "regression"'


def _numbers(arr: np.ndarray, where: str) -> np.ndarray | None:
    """Object values as float64 when every one is a number (not a bool); None when some are not."""
    for i, v in enumerate(arr):
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            raise DataError(f"{where}the target holds a missing value at row {i}")
    if all(isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_) for v in arr):
        return arr.astype(np.float64)
    return None


def infer_task(y: Any, where: str = "") -> str:
    """``classification`` or ``regression`` for a target ``y`` (1-D), by the module's rule; a one-line
    DataError when it cannot tell (float whole numbers, missing values) or the target is not 1-D."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(f"{where}the target must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "O":
        numbers = _numbers(arr, where)
        if numbers is None:
            return CLASSIFICATION
        arr = numbers
    if arr.dtype.kind in "biuUS":
        return CLASSIFICATION
    if arr.dtype.kind != "f":
        raise DataError(f"{where}the target of dtype {arr.dtype} is neither classes nor numbers; {ASK}")
    finite = np.isfinite(arr)
    if not finite.all():
        raise DataError(
            f"{where}the target holds {int((~finite).sum())} NaN/inf value(s); first at row {int(np.argmax(~finite))}"
        )
    fractional = arr != np.round(arr)
    if fractional.any():
        return REGRESSION
    first = float(arr[0]) if len(arr) else 0.0
    raise DataError(f"{where}the target holds whole numbers as floats (e.g. {first!r}): classes or a quantity? {ASK}")


def check_regression_target(y: Any, where: str = "") -> np.ndarray:
    """A regression target as finite float64 (n,); text, missing or non-finite values are a one-line DataError."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(f"{where}the target must be 1-D, got shape {arr.shape}")
    if len(arr) == 0:
        raise DataError(f"{where}the target is empty")
    if arr.dtype.kind in "USO":
        for i, v in enumerate(arr):
            if isinstance(v, str | bytes):
                raise DataError(f"{where}a regression needs a numeric target; row {i} holds {v!r} (text)")
        numbers = _numbers(arr, where)
        if numbers is None:
            raise DataError(f"{where}a regression needs a numeric target; it holds {type(arr[0]).__name__} values")
        arr = numbers
    if arr.dtype.kind == "c":
        raise DataError(f"{where}a regression needs a real target, got complex values")
    out = arr.astype(np.float64)
    bad = ~np.isfinite(out)
    if bad.any():
        raise DataError(
            f"{where}the target holds {int(bad.sum())} NaN/inf value(s); first at row {int(np.argmax(bad))}"
        )
    return out
