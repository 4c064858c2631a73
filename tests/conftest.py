"""Shared fixtures."""

from __future__ import annotations

import pytest

from caviar import kernels


@pytest.fixture(params=["kernels", "numpy"])
def engine_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on both engine paths: the fused numba kernels and the plain numpy passes.

    numba is a dependency: a missing or broken install fails the kernel half instead of skipping it.
    """
    if request.param == "kernels":
        assert kernels.ENABLED, "numba kernels are not available (is numba installed? CAVIAR_KERNELS=numpy?)"
    else:
        monkeypatch.setattr(kernels, "ENABLED", False)
    return request.param
