"""Shared fixtures."""

from __future__ import annotations

import pytest

from caviar.backend import NUMBA_AVAILABLE, Backend


@pytest.fixture(params=[Backend.NUMBA, Backend.NUMPY], ids=["kernels", "numpy"])
def engine_path(request: pytest.FixtureRequest) -> Backend:
    """The engine backend to run a test on, once each: the fused numba kernels and the numpy passes.

    Tests pass it down explicitly (``Trainer(..., backend=engine_path)``, ``forward(..., backend=)``,
    ``Optimizer(kind, engine_path)``); nothing global changes. numba is a dependency: a missing install
    fails the kernel half instead of skipping it.
    """
    if request.param is Backend.NUMBA:
        assert NUMBA_AVAILABLE, "numba kernels are not available (is numba installed?)"
    return request.param
