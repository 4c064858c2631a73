"""Error classes: every user mistake surfaces as one of these, with a one-line message.

They subclass ValueError so that scikit-learn's conventions (and users' ``except ValueError``)
keep working; the CLI catches ``CaviarError`` and prints its message on one line.
"""

from __future__ import annotations


class CaviarError(ValueError):
    """Base class of the errors caviar raises for bad input or bad state."""


class DataError(CaviarError):
    """Input data is unusable: NaN/inf, wrong labels, mismatched lengths, missing files."""


class SpecError(CaviarError):
    """A study spec (TOML file or dict) is malformed or asks for something impossible."""


class ModelFileError(CaviarError):
    """A model file is missing, corrupt or not written by caviar."""


class StorageError(CaviarError):
    """The study storage cannot be opened or does not hold what was asked for."""


class ControlError(CaviarError):
    """A panda control (change, rollback, fork) cannot be applied."""
