"""The benchmark scripts still run end to end and print every figure they promise.

Smoke runs only (a step or an epoch each): speed is measured by the scripts, never asserted here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RATIO_ROW = re.compile(r"^\| (digits|mnist)\s+\| (.+?)\s+\| ([\d,.]+)\s+\| ([\d,.]*)\s+\| ([\d.]+)x?\s+\|", re.M)


def run_script(*args: str, timeout: int = 300) -> str:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.timeout(300)
def test_engine_benchmark_prints_every_ratio() -> None:
    text = run_script("benchmarks/engine.py", "--quick", "--steps", "1", "--repeats", "1", "--threads", "1")
    assert "openblas" in text.lower() or "blas:" in text  # says which BLAS kernel ran
    rows = {(m.group(1), m.group(2).strip()): float(m.group(5)) for m in RATIO_ROW.finditer(text)}
    for data in ("digits", "mnist"):
        for measure in (
            "K=32 population vs 32 sequential torch",
            "K=32 population vs torch.func ensemble",
            "K=1 vs torch nn.Sequential",
            "K=32 GFLOP/s vs numpy matmul",
        ):
            assert rows.get((data, measure), 0) > 0, (data, measure, text[-3000:])


@pytest.mark.timeout(300)
def test_tuning_benchmark_part1_compares_both_sides() -> None:
    text = run_script("benchmarks/tune.py", "--part", "1", "--epochs", "1", "--threads", "1")
    rows = re.findall(r"^(caviar \(run_study\)|Optuna \+ PyTorch)\s+([\d.]+)\s+[\d.]+\s+([\d.]+)$", text, re.M)
    accuracy = {name: float(acc) for name, _, acc in rows}
    assert set(accuracy) == {"caviar (run_study)", "Optuna + PyTorch"}, text[-2000:]
    assert all(0 < acc <= 1 for acc in accuracy.values())
    assert re.search(r"speed-up caviar / Optuna\+PyTorch: [\d.]+x", text)


@pytest.mark.timeout(300)
def test_tuning_benchmark_part2_writes_its_table_and_figure(tmp_path: Path) -> None:
    figure = tmp_path / "strategies.png"
    text = run_script(
        "benchmarks/tune.py",
        "--part",
        "2",
        "--quick",
        "--epochs",
        "1",
        "--seeds",
        "1",
        "--threads",
        "1",
        "--figure",
        str(figure),
    )
    for data in ("digits", "mnist1d"):
        for strategy in ("random", "sobol", "coarse_to_fine", "tpe"):
            assert re.search(rf"^{data}\s+{strategy}\s+[\d.]+ \+- [\d.]+\s+[\d.]+ \+- [\d.]+$", text, re.M), (
                data,
                strategy,
                text[-2000:],
            )
    assert len(re.findall(r"coarse_to_fine [\d.]+ (>=|<) random [\d.]+", text)) == 4
    assert figure.stat().st_size > 10_000 and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
