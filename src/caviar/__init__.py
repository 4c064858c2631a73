"""caviar: train neural networks and tune their hyperparameters, many models at once."""

from caviar.errors import CaviarError, DataError, ModelFileError, SpecError, StorageError
from caviar.model_io import load
from caviar.sklearn import Classifier

__version__ = "0.1.0"

__all__ = [
    "CaviarError",
    "Classifier",
    "DataError",
    "ModelFileError",
    "SpecError",
    "StorageError",
    "__version__",
    "load",
]
