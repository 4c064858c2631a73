"""Study names: any printable text (slashes, quotes, markup included), stored and shown as data.

What every database can hold is the rule: no NUL (PostgreSQL's text cannot hold it) and no other
control character (a name is printed on one line), not empty, at most 255 characters (the column).
"""

from __future__ import annotations

import unicodedata

from caviar.errors import StorageError

__all__ = ["MAX_NAME", "check_study_name"]

MAX_NAME = 255


def check_study_name(name: str) -> str:
    """``name`` unchanged, or a one-line StorageError saying what is wrong with it."""
    if not isinstance(name, str) or not name.strip():
        raise StorageError(f"a study name must be non-empty text, got {name!r}")
    if len(name) > MAX_NAME:
        raise StorageError(f"study name is {len(name)} characters long; at most {MAX_NAME}")
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        raise StorageError(f"study name {name!r} holds the control character {bad!r} (at {name.index(bad)})")
    return name
