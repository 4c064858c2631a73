"""``python -m caviar`` is the caviar command line."""

from __future__ import annotations

import subprocess
import sys


def test_python_m_caviar_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "caviar", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "tune" in r.stdout and "best" in r.stdout
