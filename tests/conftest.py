"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from caviar.backend import NUMBA_AVAILABLE, Backend
from cli_runner import CliResult, run_caviar


@pytest.fixture(autouse=True, scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """caviar's data cache (caviar.data.cache) in a folder of this test run, so that the suite neither
    reads nor fills the user's ~/.cache/caviar; subprocesses inherit it."""
    folder = tmp_path_factory.mktemp("caviar-cache")
    before = os.environ.get("CAVIAR_CACHE_DIR")
    os.environ["CAVIAR_CACHE_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("CAVIAR_CACHE_DIR", None)
    else:
        os.environ["CAVIAR_CACHE_DIR"] = before


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
