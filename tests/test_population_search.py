"""benchmarks/population_search.py still runs end to end and prints every figure it promises (a smoke
run: one seed, a few trials of a few epochs, digits only). Accuracies are checked as numbers, never
against each other: the benchmark measures, the suite does not."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("caviar PBT", "caviar random + halving", "caviar Hyperband", "Optuna TPE + median pruner")


@pytest.mark.timeout(600)
def test_population_search_benchmark_prints_its_tables() -> None:
    out = subprocess.run(
        [sys.executable, "benchmarks/population_search.py", "--smoke", "--datasets", "digits", "--workers", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert re.search(r"^machine: .+, \d+ cores, load average", text, re.M), text[:1000]
    assert re.search(r"^digits seed 0: Optuna ran \d+ trials in [\d.]+ s \(timeout [\d.]+ s", text, re.M), text
    for method in METHODS:
        row = re.search(rf"^\| digits \| {re.escape(method)} \| ([\d.]+) \| ([\d.]+) \+- [\d.]+ \|$", text, re.M)
        assert row and 0 < float(row.group(2)) <= 1, (method, text[-2000:])
    for study in ("caviar random + halving", "caviar PBT"):
        assert re.search(rf"^\| digits \| {re.escape(study)} \| [+-][\d.]+ \+- [\d.]+ \|$", text, re.M), text[-1500:]
