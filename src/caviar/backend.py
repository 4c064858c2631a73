"""The engine's backend: fused numba kernels or plain numpy passes, one explicit value.

The choice is made once, at the top (a ``Trainer`` built without one resolves it from the
environment with :func:`default_backend`), and passed down to the network's forward/backward and
to the optimizer, which branch on it. Nothing below the top reads the environment.

``CAVIAR_KERNELS=numpy`` selects the numpy passes; ``numba`` (the default) the kernels, or the
numpy passes with a warning-free fallback when numba is not installed. Any other value is named in
a one-line warning and means ``numba``.
"""

from __future__ import annotations

import enum
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])


def _import_numba() -> Any:
    try:
        import numba
    except ImportError:  # numba is a dependency; without it the engine runs its numpy passes
        return None
    return numba


_numba = _import_numba()
#: True when numba imports: the kernels can be compiled.
NUMBA_AVAILABLE = _numba is not None


class Backend(str, enum.Enum):
    """Which code runs the elementwise work of a training step."""

    NUMBA = "numba"  # fused loops compiled by numba (caviar.nn.kernels, caviar.optim.kernels)
    NUMPY = "numpy"  # numpy passes (caviar.nn.layers, caviar.nn.losses, Optimizer._step)

    @property
    def fused(self) -> bool:
        """True when the fused kernels run."""
        return self is Backend.NUMBA

    @classmethod
    def of(cls, value: Backend | str) -> Backend:
        """The backend named ``value``; a one-line ValueError for anything else or a missing numba."""
        try:
            backend = cls(value.strip().lower() if isinstance(value, str) else value)
        except ValueError:
            raise ValueError(f"backend {value!r}: choose 'numba' or 'numpy'") from None
        if backend is Backend.NUMBA and not NUMBA_AVAILABLE:
            raise ValueError("backend 'numba': numba is not installed (CAVIAR_KERNELS=numpy runs without it)")
        return backend


def default_backend(environ: Mapping[str, str] | None = None) -> Backend:
    """The backend the environment asks for (``CAVIAR_KERNELS``), resolved when a trainer is built."""
    env = os.environ if environ is None else environ
    choice = env.get("CAVIAR_KERNELS", "numba").strip().lower()
    if choice == "numpy":
        return Backend.NUMPY
    if choice != "numba":
        warnings.warn(f"CAVIAR_KERNELS={choice!r} is neither 'numba' nor 'numpy'; using numba", stacklevel=2)
    return Backend.NUMBA if NUMBA_AVAILABLE else Backend.NUMPY


def kernel(fn: F) -> F:
    """Compile ``fn`` as a kernel: no GIL (the trainer runs slices on threads), cached on disk beside
    its module, numpy's error model. Without numba ``fn`` stays Python (never called: the backend is
    then numpy)."""
    if _numba is None:
        return fn
    return cast(F, _numba.njit(nogil=True, cache=True, fastmath=False, error_model="numpy", boundscheck=False)(fn))
