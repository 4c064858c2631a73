"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from caviar.backend import NUMBA_AVAILABLE, Backend
from cli_runner import CliResult, run_caviar


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


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Run `caviar ARGS...` in this process (tests.cli_runner), 200 columns wide so lines do not wrap."""
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str | Path) -> CliResult:
        return run_caviar(capsys, monkeypatch, *args)

    return run
