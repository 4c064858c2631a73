"""Tuning: search spaces on each hyperparameter's own scale, samplers, studies and their storage.

The main entry points are re-exported lazily (so importing a submodule stays light):
``run_study``, ``Study``, ``load_spec``, ``Space``, ``open_storage``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "run_study": "caviar.tune.study",
    "Study": "caviar.tune.study",
    "preview": "caviar.tune.planning",
    "load_spec": "caviar.tune.spec",
    "StudySpec": "caviar.tune.spec",
    "Space": "caviar.tune.space",
    "open_storage": "caviar.storage",
    "Storage": "caviar.storage",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'caviar.tune' has no attribute {name!r}")
