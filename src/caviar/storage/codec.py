"""How values become column values and back: JSON text, UTC datetimes, finite floats, 64-bit seeds."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from caviar.errors import StorageError


def _json_default(obj: Any) -> Any:
    """Make numpy scalars/arrays, sets and paths JSON-friendly."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, (Path, datetime)):
        return str(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} as JSON")


def dumps(value: Any) -> str:
    """JSON text; NaN and infinities are kept (Python's json reads them back)."""
    return json.dumps(value, default=_json_default, sort_keys=True)


def loads(text: str | None, empty: Any = None) -> Any:
    """The value of a JSON column (``empty`` for NULL)."""
    return empty if text is None else json.loads(text)


def canonical(value: Any) -> Any:
    """The value as it reads back from storage (tuples become lists, numpy becomes Python)."""
    return json.loads(dumps(value))


def utc(dt: datetime) -> datetime:
    """An aware UTC datetime (SQLite hands naive ones back)."""
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def utc_or_none(dt: datetime | None) -> datetime | None:
    """``utc`` for a nullable column."""
    return None if dt is None else utc(dt)


def utc_now(at: datetime | None = None) -> datetime:
    """``at`` in UTC, or the current time (methods take ``now=`` so tests can move the clock)."""
    return datetime.now(timezone.utc) if at is None else utc(at)


def finite(x: Any) -> float | None:
    """A float, or None for missing and non-finite values (they never win a study)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def nan_if_none(x: float | None) -> float:
    """A curve value as read back: a missing one is NaN."""
    return float("nan") if x is None else float(x)


def int64_seed(x: Any) -> int | None:
    """A seed as stored (BIGINT): None, or an int that fits in 64 bits."""
    if x is None:
        return None
    x = int(x)
    if not -(2**63) <= x < 2**63:
        raise StorageError(f"seed {x} does not fit in 64 bits")
    return x


def first_line(text: object) -> str:
    """The first non-empty line of an error's text (messages are one line)."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else "unknown error"
