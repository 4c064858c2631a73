"""An on-disk cache for data preparation whose cost is mostly an import.

Loading a data set bundled in scikit-learn's wheel and drawing a stratified split are fast in
themselves, but importing scikit-learn (and the scipy.stats it pulls in) takes ~0.7 s: a third of a
64-trial digits study. The first call stores its arrays here; later processes read them back in
milliseconds, bit for bit what the computation gave. An entry is keyed by what the result depends on,
scikit-learn's version included, so an upgrade computes it again.

Where: ``$CAVIAR_CACHE_DIR``, else ``$XDG_CACHE_HOME/caviar``, else ``~/.cache/caviar``.
``CAVIAR_CACHE_DIR=off`` (or empty) turns the cache off. A missing, unreadable or foreign entry is
computed again; a folder that cannot be written is skipped silently (the result is the same). Each
kind keeps its ``MAX_ENTRIES`` newest entries: a user splitting many data sets does not fill the disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "CAVIAR_CACHE_DIR"
#: Values of ``CAVIAR_CACHE_DIR`` that turn the cache off.
OFF = ("", "off", "0", "none", "false")
#: Entries kept per kind (the oldest are removed when a new one is written).
MAX_ENTRIES = 64
#: The key's field holding the entry's own key, stored beside the arrays.
_KEY_FIELD = "__cache_key__"


def cache_dir() -> Path | None:
    """The cache folder, or None when ``CAVIAR_CACHE_DIR`` turns it off."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in OFF else Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "caviar"


def package_version(name: str) -> str:
    """An installed distribution's version, read from its metadata (no import of the package)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def digest(array: np.ndarray) -> str:
    """A content hash of an array (its dtype and shape included), for keys."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
    return h.hexdigest()


def cached(kind: str, key: Mapping[str, object], compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``compute()``'s arrays, from the cache when an entry of ``kind`` with this ``key`` is there.

    ``key`` is JSON-able and names everything the result depends on. The arrays must be numeric or
    strings (they are stored without pickling).
    """
    folder = cache_dir()
    if folder is None:
        return compute()
    text = json.dumps({"kind": kind, **key}, sort_keys=True, default=str)
    path = folder / f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:32]}.npz"
    found = _read(path, text)
    if found is not None:
        return found
    arrays = compute()
    _write(path, text, arrays)
    _prune(folder, kind)
    return arrays


def _read(path: Path, text: str) -> dict[str, np.ndarray] | None:
    """The entry's arrays, or None when it is missing, unreadable or holds another key."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored[_KEY_FIELD]) != text:
                return None
            return {name: stored[name] for name in stored.files if name != _KEY_FIELD}
    except (OSError, ValueError, KeyError, EOFError):
        return None


def _write(path: Path, text: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Store an entry atomically (a temporary file renamed into place); skipped where it cannot be."""
    if any(np.asarray(a).dtype == object for a in arrays.values()):
        return  # stored without pickling: objects are not
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
            tmp = f.name
            entry: dict[str, Any] = {_KEY_FIELD: np.array(text), **arrays}
            np.savez(f, **entry)
        os.replace(tmp, path)
    except (OSError, ValueError):
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _prune(folder: Path, kind: str) -> None:
    """Remove the oldest entries of ``kind`` beyond ``MAX_ENTRIES``."""
    try:
        entries = sorted(folder.glob(f"{kind}-*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[MAX_ENTRIES:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass
