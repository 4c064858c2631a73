"""Tuning: search spaces on each hyperparameter's own scale, samplers, studies and their storage.

The main entry points are re-exported lazily (so importing a submodule stays light):
``run_study``, ``Study``, ``load_spec``, ``Space``, ``open_storage``; for the user's own training
code, ``optimize``, ``create_study`` (ask/tell), ``load_study``, ``Trial`` and ``TrialPruned``.
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
    # external objectives (bring your own training code): docs/objective.md
    "optimize": "caviar.tune.asktell",
    "create_study": "caviar.tune.asktell",
    "load_study": "caviar.tune.asktell",
    "ObjectiveStudy": "caviar.tune.asktell",
    "ObjectiveSpec": "caviar.tune.objective_spec",
    "load_objective_spec": "caviar.tune.objective_spec",
    "Trial": "caviar.tune.trial",
    "TrialPruned": "caviar.tune.trial",
    "Storage": "caviar.storage",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'caviar.tune' has no attribute {name!r}")
