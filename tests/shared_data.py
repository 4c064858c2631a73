"""Where the real data sets the tests read live: ``../shared/data`` beside the repository root.

CI clones the repository with a copy of ``shared/`` beside it, as the developers' machines have it;
``CAVIAR_SHARED_DATA`` points elsewhere. A missing folder fails the test that needs it, loudly: a
fixture that is not there is a broken set-up, never a reason to skip.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CAVIAR_SHARED_DATA", REPO.parent / "shared" / "data"))


def mnist_dir() -> Path:
    """The folder of MNIST's four IDX files; AssertionError naming the path when it is missing."""
    path = SHARED_DATA / "mnist"
    assert (path / "train-images-idx3-ubyte.gz").is_file(), (
        f"MNIST is not at {path}: put shared/data/mnist beside the checkout or set CAVIAR_SHARED_DATA"
    )
    return path
