"""caviar: train neural networks and tune their hyperparameters, many models at once.

``Classifier``, ``Regressor`` and ``load`` are imported on first use, so that ``import caviar`` (and every
worker process and CLI call) does not pay for scikit-learn until it needs it.
"""

from __future__ import annotations

from typing import Any

from caviar.errors import CaviarError, ControlError, DataError, ModelFileError, SpecError, StorageError

__version__ = "0.1.0"

__all__ = [
    "CaviarError",
    "Classifier",
    "ControlError",
    "DataError",
    "ModelFileError",
    "Regressor",
    "SpecError",
    "StorageError",
    "__version__",
    "load",
]


def __getattr__(name: str) -> Any:
    if name == "Classifier":
        from caviar.sklearn import Classifier

        return Classifier
    if name == "Regressor":
        from caviar.sklearn import Regressor

        return Regressor
    if name == "load":
        from caviar.sklearn import load

        return load
    raise AttributeError(f"module 'caviar' has no attribute {name!r}")
