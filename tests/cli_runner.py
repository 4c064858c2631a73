"""Running `caviar ARGS...` in the test's own process, through the console script's entry point."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from caviar.cli import main

#: rich's styling and cursor sequences, removed from what a test reads.
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class CliResult(NamedTuple):
    """What one invocation left: exit code and the two streams (styling removed)."""

    code: int
    out: str
    err: str


def run_caviar(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> CliResult:
    """`caviar ARGS...`: the exit code (0 when main returns or exits with None) and the captured streams."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["caviar", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return CliResult(code, ANSI.sub("", captured.out), ANSI.sub("", captured.err))
