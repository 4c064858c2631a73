"""The benchmark scripts still run end to end and print every figure they promise.

Smoke runs only (``--smoke``: a step, an epoch or a few trials each): speed is measured by the
scripts, never asserted here. MNIST is read from the benchmarks' default folder (the repository's
sibling shared/data/mnist) unless CAVIAR_MNIST_DIR names another.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"[\d,.]+"
SPREAD = rf"{NUMBER}(?: \({NUMBER}-{NUMBER}\))?"  # 'median (min-max)', or one run's figure


def run_script(*args: str, timeout: int = 300) -> str:
    mnist = os.environ.get("CAVIAR_MNIST_DIR")
    extra = ["--data-dir", mnist] if mnist else []
    out = subprocess.run([sys.executable, *args, *extra], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def assert_machine_state(text: str) -> None:
    assert re.search(r"^machine: .+, \d+ cores, load average [\d.]+, [\d.]+, [\d.]+", text, re.M), text[:2000]
    assert "OPENBLAS_CORETYPE=" in text
    assert re.search(r"^blas: openblas [\d.]+ \(\w+ kernel", text, re.M), text[:2000]  # the BLAS kernel numpy uses
    assert re.search(r"^torch [\d.]+\S*: .*\d+ .*threads", text, re.M), text[:2000]


@pytest.mark.timeout(300)
def test_engine_benchmark_prints_every_anchor_and_matmul_fraction() -> None:
    text = run_script("benchmarks/engine.py", "--smoke", "--threads", "1")
    assert_machine_state(text)
    assert re.search(r"^jax [\d.]+: backend cpu, .*XLA_FLAGS=", text, re.M), text[:3000]
    anchors = (
        "JAX jit(vmap) + lax.scan over the steps",
        "JAX jit(vmap), one call per step",
        "torch.func ensemble (vmap(grad))",
        "sequential torch trainings",
    )
    for data in ("digits", "mnist"):
        assert re.search(rf"^{data} \(.+\): numpy float32 GEMM GFLOP/s .*rate used: {NUMBER}$", text, re.M), data
        for anchor in anchors:
            ratio = re.search(
                rf"^\| {data}\s+\| K=2 population vs {re.escape(anchor)}( \[strongest\])?\s+\| {NUMBER}\s+\| "
                rf"{NUMBER}\s+\| ({NUMBER})x\s+\| {SPREAD}\s+\|",
                text,
                re.M,
            )
            assert ratio and float(ratio.group(2)) >= 0, (data, anchor, text[-4000:])  # a figure, never a speed
            fraction = re.search(
                rf"^\| {data}\s+\| K=2 {re.escape(anchor)}\s+\| {NUMBER}\s+\| {SPREAD}\s+\| ({NUMBER})", text, re.M
            )
            assert fraction and float(fraction.group(1)) >= 0, (data, anchor, text[-4000:])
        assert re.search(rf"^\| {data}\s+\| K=2 caviar\s+\| {NUMBER}\s+\| {SPREAD}\s+\| {NUMBER}", text, re.M)
        assert re.search(rf"^\| {data}\s+\| K=1 vs torch nn.Sequential\s+\| {NUMBER}", text, re.M)
        assert len(re.findall(rf"^\| {data}\s+\| K=2 JAX .*\| {NUMBER} s\s*\|$", text, re.M)) == 2  # compile times
        summary = re.search(rf"^{data} K=2: caviar / (.+) \(the strongest anchor\) = {NUMBER}x", text, re.M)
        assert summary and summary.group(1) in anchors
    assert text.index("## Summary") > text.index("| data")
    for data in ("digits", "mnist"):  # the measured bound, and where a slice's step goes
        assert re.search(
            rf"^bound {data} K=2: matmuls {NUMBER} ms .* \+ Adam {NUMBER} ms .* -> {NUMBER} model-samples/s "
            rf"\({NUMBER} of the matmul rate\); caviar {NUMBER} = {NUMBER} of the bound; the target .* of the bound$",
            text,
            re.M,
        ), (data, text[-3000:])
        assert re.search(rf"^profile: {data} K=2, one slice of \d+ members on one thread", text, re.M), data
    for phase in ("forward matmul dense0", "Adam over every parameter", "the rest (Python", "all matmuls"):
        assert len(re.findall(rf"^\| {re.escape(phase)}.*\| {NUMBER}\s+\| -?{NUMBER}\s+\|$", text, re.M)) == 2, phase


@pytest.fixture(scope="module")
def tune_smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One ``tune.py --smoke`` run (parts 1, mnist and 2: one start-up instead of three) and its figure."""
    figure = tmp_path_factory.mktemp("figure") / "strategies.png"
    return run_script("benchmarks/tune.py", "--smoke", "--threads", "1", "--figure", str(figure), timeout=600), figure


@pytest.mark.timeout(600)
def test_tuning_benchmark_part1_races_the_optuna_anchors_on_both_spaces(tune_smoke: tuple[str, Path]) -> None:
    text = tune_smoke[0]
    assert_machine_state(text)
    assert re.search(r"^caviar: modules byte-compiled in .+ \(as a wheel's install does\)", text, re.M)
    labels = (
        f"Optuna, {min(4, os.cpu_count() or 1)} worker processes x 1 torch thread",  # 4 trials: at most 4 workers
        "Optuna, 1 process, torch's default threads",
        "caviar (run_study, whole process)",
        "caviar, empty data cache (a first study)",
    )
    for space in ("fixed", "mixed"):
        block = text[text.index(f"Part 1, {space} space") :]
        rows = re.findall(
            rf"^\| (.+?)(?: \[strongest anchor\])?\s+\| {SPREAD}\s+\| {NUMBER}\s+\| ({SPREAD})\s+\|$", block, re.M
        )
        names = [name for name, _ in rows[:4]]
        assert all(any(n.startswith(label) for n in names) for label in labels), (space, rows, block[:2000])
        assert all(0 < float(acc.split()[0]) <= 1 for _, acc in rows[:4])
        assert "[strongest anchor]" in block.splitlines()[3]  # the strongest anchor is the first row
        assert len(re.findall(rf"^{space} space: speed-up caviar / Optuna, .+: {NUMBER}x \(", text, re.M)) == 2
        assert re.search(rf"^{space} space: caviar, empty data cache .*: {NUMBER} s, {NUMBER}x Optuna, .*; the cache "
                         rf"saves -?{NUMBER} s$", text, re.M)  # fmt: skip


@pytest.mark.timeout(600)
def test_tuning_benchmark_mnist_reports_ratio_and_matmul_fraction(tune_smoke: tuple[str, Path]) -> None:
    text = tune_smoke[0]
    assert re.search(rf"numpy float32 GEMM GFLOP/s .*rate used: {NUMBER}", text)
    assert re.search(r"^\| Optuna, \d+ worker processes x 1 torch thread \[strongest anchor\]", text, re.M), text
    assert re.search(r"^\| caviar \(run_study, whole process\)\s+\|", text, re.M)
    assert re.search(rf"^MNIST: speed-up caviar / Optuna, .+: {NUMBER}x", text, re.M)
    assert re.search(
        rf"^MNIST: caviar's whole study: {NUMBER} TFLOP .* = {SPREAD} of the machine's float32", text, re.M
    )


@pytest.mark.timeout(600)
def test_tuning_benchmark_part2_writes_its_table_and_figure(tune_smoke: tuple[str, Path]) -> None:
    text, figure = tune_smoke
    for data in ("digits", "mnist1d"):
        for strategy in ("random", "sobol", "coarse_to_fine", "tpe"):
            assert re.search(rf"^{data}\s+{strategy}\s+[\d.]+ \+- [\d.]+\s+[\d.]+ \+- [\d.]+$", text, re.M), (
                data,
                strategy,
                text[-2000:],
            )
    assert len(re.findall(r"coarse_to_fine [\d.]+ (>=|<) random [\d.]+", text)) == 4
    assert figure.stat().st_size > 10_000 and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(300)
def test_sklearn_benchmark_prints_single_fits_and_sweeps() -> None:
    out = subprocess.run(
        [sys.executable, "benchmarks/sklearn_mlp.py", "--smoke", "--threads", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert re.search(r"^machine: .+ cores, load average", text, re.M) and re.search(r"^blas: openblas", text, re.M)
    for data in ("digits", "mnist1d"):
        block = text[text.index(f"### {data}: one model") :]
        for model in ("sklearn MLPClassifier", r"caviar Classifier \(no BN\)", r"caviar Classifier \(BN\)"):
            assert re.search(rf"^\| {model} \| {SPREAD} \| [\d.]+ \| [\d.]+x \|$", block, re.M), (data, model)
        assert re.search(rf"### {data}: learning-rate sweep of 2 models", text)
    assert len(re.findall(r"^speed-up: [\d.]+x$", text, re.M)) == 2


POPULATION_METHODS = ("caviar PBT", "caviar random + halving", "caviar Hyperband", "Optuna TPE + median pruner")


@pytest.mark.timeout(600)
def test_population_search_benchmark_prints_its_tables() -> None:
    """One seed, a few trials of a few epochs, digits only: every search's row and the ensemble margins."""
    text = run_script(
        "benchmarks/population_search.py", "--smoke", "--datasets", "digits", "--workers", "1", timeout=600
    )
    assert re.search(r"^machine: .+, \d+ cores, load average", text, re.M), text[:1000]
    assert re.search(r"caviar \d+ threads in one process, Optuna 1 worker processes x 1 torch thread", text), text[
        :1000
    ]
    assert re.search(r"^digits seed 0: Optuna ran \d+ trials in [\d.]+ s \(timeout [\d.]+ s", text, re.M), text
    for method in POPULATION_METHODS:
        row = re.search(rf"^\| digits \| {re.escape(method)} \| ([\d.]+) \| ([\d.]+) \+- [\d.]+ \|$", text, re.M)
        assert row and 0 < float(row.group(2)) <= 1, (method, text[-2000:])
    for study in ("caviar random + halving", "caviar PBT"):
        assert re.search(rf"^\| digits \| {re.escape(study)} \| [+-][\d.]+ \+- [\d.]+ \|$", text, re.M), text[-1500:]


def test_population_search_refuses_a_missing_mnist_folder(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "benchmarks/population_search.py", "--smoke", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and f"--data-dir: no MNIST idx files in {tmp_path}" in out.stderr, out.stderr


@pytest.mark.timeout(600)
def test_ray_pbt_benchmark_prints_both_times_and_their_ratio() -> None:
    """caviar's PBT and Ray Tune's PBT reach a low target on digits; both times, the ratio, the machine."""
    text = run_script("benchmarks/ray_pbt.py", "--smoke", timeout=600)
    assert_machine_state(text)
    assert text.count("\nmachine: ") == 1 and text.startswith("machine: ")  # before and after the run
    seconds = rf"target ({NUMBER}) s \(epoch \d+\), best val_accuracy [\d.]+"
    caviar = re.search(rf"^caviar PBT: {seconds}, \d+ copies, whole run {NUMBER} s", text, re.M)
    ray = re.search(rf"^Ray Tune PBT: {seconds}, \d+ results, Tuner.fit {NUMBER} s \(ray.init {NUMBER} s", text, re.M)
    assert caviar and ray, text[-3000:]
    ratio = re.search(rf"^ratio: Ray / caviar time to val_accuracy 0.5: ({NUMBER})x$", text, re.M)
    assert ratio and float(ratio.group(1)) > 0, text[-1000:]


def test_study_profile_prints_every_phase_of_both_spaces() -> None:
    text = run_script("benchmarks/study_profile.py", "--smoke", timeout=300)
    assert re.search(r"^machine: .+, \d+ cores, load average [\d.]+", text, re.M), text[:2000]
    assert re.search(r"^blas: openblas [\d.]+ \(\w+ kernel", text, re.M), text[:2000]  # no torch here
    assert re.search(r"^caviar: modules byte-compiled in .+; PYTHONDONTWRITEBYTECODE=", text, re.M), text[:2000]
    for space in ("fixed", "mixed"):
        block = text[text.index(f"### {space} space: 4 trials, 1 epochs, whole process ") :]
        for phase in ("import caviar.tune.study: done at", "run_study:", "load, split and standardize the data:",
                      "open (create) the storage:", "evaluation (validation", "after run_study"):  # fmt: skip
            assert phase in block, (space, phase, block[:1500])
        assert re.search(rf"pid \d+: trains \d+ members {NUMBER}-{NUMBER} s", block), block[:1500]
