"""Tuning benchmarks: caviar against the strongest Optuna + PyTorch anchor, and the search strategies.

Part 1 (``--part 1``): a 64-trial random search on digits (20 epochs, batch norm + ReLU, Adam), on two
search spaces: the fixed one (64-128-64-10, batch 64; learning rate, betas and L2 tuned) and the mixed
one (hidden from {64, 128, 128-64, 256-128}, batch size from {32, 64, 128}, dropout in [0, 0.3], plus
the fixed space's four). Every contestant is timed as a whole process, what a user waits for, imports
included, from the start of the command until its last process exits:

- Optuna as its documentation advises for parallel work (benchmarks/optuna_torch.py): one SQLite
  study, one worker process per core each calling ``study.optimize`` with its share of the trials,
  torch on one thread per process (``torch.set_num_threads(1)``, OMP/MKL_NUM_THREADS=1);
- Optuna in one process with torch's default threads (the plain user's figure);
- caviar: ``python -c "run_study(spec)"`` (SQLite storage, trials packed into populations).

Both sides train the same networks for the same epochs on the same split (caviar's ``load_data``,
written to an .npz before the clocks for the Optuna side) and report the best validation accuracy.

Part MNIST (``--part mnist``): a 32-trial random search on real MNIST (5 epochs, 784-256-128-10, batch
128, the fixed space's four) against the careful Optuna anchor: the ratio, and the fraction of the
machine's float32 matmul rate the whole caviar study reaches (the real flop count of every layer's
forward and backward for every sample of every epoch, evaluation included, over the whole process's
wall time; the rate measured by numpy GEMMs at the start of the run).

Part 2 (``--part 2``): best validation accuracy at budgets 16, 32 and 64 for random, sobol,
coarse_to_fine and tpe, on digits and mnist1d, over several seeds: mean +- std, and whether
coarse-to-fine >= random. Random, Sobol and TPE propose trial n from (seed, n) and the batches before
it, whatever the budget, so a budget-b result is the best of the first b trials of one 64-trial study;
coarse-to-fine splits its budget into rounds, so it runs once per budget. Writes docs/img/strategies.png.

    python benchmarks/tune.py --part 1                # fixed and mixed spaces, 3 interleaved repeats
    python benchmarks/tune.py --part mnist            # real MNIST from ../shared/data/mnist
    python benchmarks/tune.py --part 2 --quick        # strategies: fewer seeds, budgets and epochs
    python benchmarks/tune.py --smoke                 # every part, tiny: the test suite's run

Figures are measured, never asserted; docs/benchmarks.md (## Tuning) records them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    byte_compile_caviar,
    describe_blas,
    machine_state,
    matmul_rate,
    mlp_flops,
    mlp_gemm_shapes,
    set_threads,
    spread,
    table,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIGURE = ROOT / "docs" / "img" / "strategies.png"
#: Real MNIST: the repository's sibling folder shared/data/mnist (see its README), resolved from here.
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
OPTUNA_SCRIPT = HERE / "optuna_torch.py"
HIDDEN = (128, 64)
BATCH = 64
SPACE = {
    "learning_rate": {"low": 1e-4, "high": 3e-2, "scale": "log"},
    "beta1": {"low": 0.8, "high": 0.99, "scale": "one_minus_log"},
    "beta2": {"low": 0.99, "high": 0.9999, "scale": "one_minus_log"},
    "l2": {"low": 1e-6, "high": 1e-2, "scale": "log"},
}
#: The mixed space: the architecture and the batch size tuned too (optuna_torch.py's HIDDEN_CHOICES...).
MIXED_SPACE = {
    **SPACE,
    "hidden": {"choices": [[64], [128], [128, 64], [256, 128]]},
    "batch_size": {"choices": [32, 64, 128]},
    "dropout": {"low": 0.0, "high": 0.3, "scale": "linear"},
}
SPACES = {"fixed": SPACE, "mixed": MIXED_SPACE}
STRATEGIES = ("random", "sobol", "coarse_to_fine", "tpe")
PREFIX_STRATEGIES = ("random", "sobol", "tpe")  # trial n does not depend on the budget
#: The caviar side of part 1 as a user's process: run the study a JSON spec describes, print objectives.
CAVIAR_COMMAND = (
    "import json, sys\n"
    "from caviar.tune.study import run_study\n"
    "study = run_study(json.load(open(sys.argv[1])))\n"
    "print('objectives', json.dumps([t.objective for t in study.trials]))\n"
)
#: The issue's targets, caviar's speed-up over the strongest anchor (part 1) per space.
TARGETS = {"fixed": 5.0, "mixed": 4.0}
MNIST_FRACTION_TARGET = 0.85


# ------------------------------------------------------------------------------------------- specs
def study_spec(
    dataset: str,
    strategy: str,
    trials: int,
    epochs: int,
    seed: int,
    storage: Path,
    name: str = "bench",
    *,
    space: str = "fixed",
    hidden: Sequence[int] = HIDDEN,
    batch: int = BATCH,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    """The study both sides run: ``hidden`` with BN + ReLU, Adam, batch ``batch``, on ``space``."""
    search: dict[str, Any] = {"strategy": strategy, "trials": trials, "storage": str(storage), "max_population": 64}
    if strategy == "coarse_to_fine":
        search.update(rounds=2, top_fraction=0.25)
    data: dict[str, Any] = {"dataset": dataset, "validation_fraction": 0.2, "test_fraction": 0.2}
    if data_dir is not None:
        data["data_dir"] = str(data_dir)
    return {
        "study": {"name": name, "seed": seed},
        "data": data,
        "model": {"hidden": list(hidden), "activation": "relu", "batchnorm": True},
        "training": {"optimizer": "adam", "epochs": epochs, "batch_size": batch},
        "search": search,
        "space": SPACES[space],
    }


def run_caviar(spec: dict[str, Any]) -> tuple[float, list[float | None]]:
    """Run a study in this process; returns its wall time and the objective of each trial, by number."""
    from caviar.tune.study import run_study

    start = time.perf_counter()
    study = run_study(spec)
    seconds = time.perf_counter() - start
    return seconds, [t.objective for t in study.trials]


# ------------------------------------------------------------------------- whole-process contestants
def write_split(spec: dict[str, Any], path: Path) -> tuple[int, int, int]:
    """caviar's split and standardization of the spec's data, as an .npz for the Optuna side (written
    before any clock: the anchor reads ready arrays, caviar loads and splits inside its own time).
    Returns the train, validation and test sizes."""
    from caviar.tune.planning import load_data
    from caviar.tune.spec import load_spec

    d = load_data(load_spec(spec))
    np.savez(path, X_train=d.X_train, y_train=d.y_train.astype(np.int64), X_val=d.X_val, y_val=d.y_val.astype(np.int64))
    return len(d.y_train), len(d.y_val), len(d.y_test)


@dataclass
class Contestant:
    """One whole-process command of parts 1 and mnist, and how to read its trials' objectives afterwards."""

    label: str
    command: Callable[[], list[str]]  # a fresh command line per run (a new database each time)
    objectives: Callable[[str], list[float | None]]  # from the command's stdout (or the storage)

    def run(self) -> tuple[float, float]:
        """Wall seconds of the whole command (start to the exit of its last process), best objective."""
        command = self.command()
        start = time.perf_counter()
        out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - start
        if out.returncode != 0:
            raise RuntimeError(f"{self.label} failed ({out.returncode}): {out.stderr[-2000:]}")
        values = [v for v in self.objectives(out.stdout) if v is not None]
        return seconds, max(values) if values else float("nan")


#: The caviar contestant whose data cache (caviar.data.cache) is empty at every run: a user's first study
#: on a bundled data set (scikit-learn imported to load and split it), beside the usual warm one.
CAVIAR_COLD = "caviar, empty data cache (a first study)"


def caviar_contestant(spec: dict[str, Any], folder: Path, tag: str, cold: bool = False) -> Contestant:
    """``python -c run_study(spec)`` on a fresh SQLite database per run (a finished study would resume).
    Its data cache is a folder of this run: kept from run to run (the warm-up fills it), or with
    ``cold`` a new empty one each time."""
    runs = iter(range(10**6))

    def command() -> list[str]:
        n = next(runs)
        path = folder / f"caviar-{tag}-{n}.json"
        path.write_text(
            json.dumps({**spec, "search": {**spec["search"], "storage": str(folder / f"caviar-{tag}-{n}.db")}})
        )
        cache = folder / (f"cache-{tag}-cold-{n}" if cold else "cache")
        return ["env", f"CAVIAR_CACHE_DIR={cache}", sys.executable, "-c", CAVIAR_COMMAND, str(path)]

    def objectives(stdout: str) -> list[float | None]:
        line = next(ln for ln in stdout.splitlines() if ln.startswith("objectives "))
        return json.loads(line.split(" ", 1)[1])

    return Contestant(CAVIAR_COLD if cold else "caviar (run_study, whole process)", command, objectives)


def optuna_contestant(
    label: str,
    split: Path,
    folder: Path,
    tag: str,
    *,
    space: str,
    trials: int,
    epochs: int,
    hidden: Sequence[int],
    batch: int,
    seed: int,
    workers: int,
    torch_threads: int,
) -> Contestant:
    """benchmarks/optuna_torch.py on a fresh SQLite study per run; its objectives read from the storage."""
    runs = iter(range(10**6))
    storage: list[str] = []

    def command() -> list[str]:
        url = f"sqlite:///{folder / f'optuna-{tag}-{next(runs)}.db'}"
        storage.append(url)
        return [
            sys.executable, str(OPTUNA_SCRIPT), "--data", str(split), "--storage", url, "--space", space,
            "--trials", str(trials), "--epochs", str(epochs), "--hidden", "-".join(map(str, hidden)),
            "--batch", str(batch), "--seed", str(seed), "--workers", str(workers),
            "--torch-threads", str(torch_threads),
        ]  # fmt: skip

    def objectives(stdout: str) -> list[float | None]:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name="bench", storage=storage[-1])
        done = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if len(done) != trials:
            raise RuntimeError(f"{label}: {len(done)} trials complete, expected {trials}")
        return done

    return Contestant(label, command, objectives)


def race(contestants: Sequence[Contestant], repeats: int) -> dict[str, tuple[list[float], list[float]]]:
    """Each contestant ``repeats`` times, interleaved (a, b, c, a, b, c...): seconds and best objectives."""
    runs: dict[str, tuple[list[float], list[float]]] = {c.label: ([], []) for c in contestants}
    for _ in range(repeats):
        for c in contestants:
            seconds, best = c.run()
            runs[c.label][0].append(seconds)
            runs[c.label][1].append(best)
            print(f"    {c.label}: {seconds:.2f} s, best val acc {best:.4f}", flush=True)
    return runs


def warm_up(contestants: Sequence[Contestant]) -> None:
    """One untimed run of each command (tiny settings are not needed: the OS file cache and numba's
    on-disk kernel cache warm on the first run, as on a user's second command)."""
    for c in contestants:
        c.run()


def report_race(
    title: str, runs: dict[str, tuple[list[float], list[float]]], trials: int, caviar: str, target: float | None
) -> list[str]:
    """The table, strongest anchor first, and the speed-up lines; returns the summary lines."""
    anchors = sorted((k for k in runs if k not in (caviar, CAVIAR_COLD)), key=lambda k: float(np.median(runs[k][0])))
    order = [*anchors[:1], caviar, *[k for k in runs if k == CAVIAR_COLD], *anchors[1:]]
    rows = [
        [
            label + (" [strongest anchor]" if label == anchors[0] else ""),
            spread(runs[label][0]),
            f"{np.median(runs[label][0]) / trials:.3f}",
            spread(runs[label][1], "{:.4f}"),
        ]
        for label in order
    ]
    print(f"\n{title}")
    print(table(["contestant", "wall s, median (min-max)", "s/trial", "best val acc"], rows))
    c = float(np.median(runs[caviar][0]))
    lines = []
    for i, label in enumerate(anchors):
        ratio = float(np.median(runs[label][0])) / c
        goal = f" (target >= {target:g}x: {'met' if ratio >= target else 'NOT met'})" if i == 0 and target else ""
        ratios = spread([a / b for a, b in zip(runs[label][0], runs[caviar][0], strict=True)])
        lines.append(
            f"speed-up caviar / {label}: {ratio:.2f}x ({np.median(runs[label][0]):.2f} s vs {c:.2f} s){goal}; "
            f"per repeat {ratios}; best val acc {np.median(runs[label][1]):.4f} vs caviar "
            f"{np.median(runs[caviar][1]):.4f}"
        )
    if CAVIAR_COLD in runs:
        cold = float(np.median(runs[CAVIAR_COLD][0]))
        lines.append(
            f"{CAVIAR_COLD}: {cold:.2f} s, {float(np.median(runs[anchors[0]][0])) / cold:.2f}x {anchors[0]}; "
            f"the cache saves {cold - c:.2f} s"
        )
    for ln in lines:
        print(ln)
    return lines


def part1(
    trials: int,
    epochs: int,
    seed: int,
    workers: int,
    repeats: int,
    folder: Path,
    warm: bool = True,
    plain: bool = True,
) -> list[str]:
    """caviar vs the Optuna anchors on the fixed and the mixed space, whole processes."""
    workers = max(1, min(workers, trials))  # a worker without a trial would not start
    summary = []
    for space in ("fixed", "mixed"):
        spec = study_spec("digits", "random", trials, epochs, seed, folder / "unused.db", name="bench", space=space)
        split = folder / f"digits-{space}.npz"
        write_split(spec, split)

        def make(n: int, e: int, space: str = space, split: Path = split) -> list[Contestant]:
            kw = {"space": space, "trials": n, "epochs": e, "hidden": HIDDEN, "batch": BATCH, "seed": seed}
            sp = study_spec("digits", "random", n, e, seed, folder / "unused.db", name="bench", space=space)
            careful = optuna_contestant(
                f"Optuna, {workers} worker processes x 1 torch thread",
                split,
                folder,
                f"{space}-n{n}",
                workers=workers,
                torch_threads=1,
                **kw,
            )
            one_process = optuna_contestant(
                "Optuna, 1 process, torch's default threads",
                split,
                folder,
                f"{space}-1-{n}",
                workers=1,
                torch_threads=0,
                **kw,
            )
            cold = caviar_contestant(sp, folder, f"{space}-{n}-cold", cold=True)
            return [careful, *([one_process] if plain else []), cold, caviar_contestant(sp, folder, f"{space}-{n}")]

        print(
            f"\n### {space} space: {trials} trials on digits, {epochs} epochs, {repeats} interleaved repeats",
            flush=True,
        )
        if warm:
            warm_up(make(2 * workers, 1))
        contestants = make(trials, epochs)
        runs = race(contestants, repeats)
        title = f"Part 1, {space} space ({trials}-trial random search, digits, {epochs} epochs, whole processes)"
        lines = report_race(title, runs, trials, contestants[-1].label, TARGETS[space] if epochs >= 20 else None)
        summary += [f"{space} space: {ln}" for ln in lines]
    return summary


def study_flops(widths: Sequence[int], sizes: tuple[int, int, int], epochs: int, trials: int) -> float:
    """The real matmul flops of a study whose trials all run every epoch: training steps over the train
    split and a validation pass per epoch, and the test pass at the end, for every trial."""
    forward, train = mlp_flops(widths)
    n_train, n_val, n_test = sizes
    return float(trials * (epochs * (n_train * train + n_val * forward) + n_test * forward))


def part_mnist(
    trials: int,
    epochs: int,
    seed: int,
    workers: int,
    repeats: int,
    folder: Path,
    data_dir: Path,
    limit: int | None = None,
    warm: bool = True,
) -> list[str]:
    """32 trials on real MNIST, caviar vs the careful Optuna anchor, and the fraction of the matmul rate."""
    workers = max(1, min(workers, trials))  # a worker without a trial would not start
    hidden, batch = (256, 128), 128
    spec = study_spec("mnist", "random", trials, epochs, seed, folder / "unused.db", hidden=hidden, batch=batch,
                      data_dir=data_dir)  # fmt: skip
    if limit:  # smoke runs: a slice of MNIST as an .npz both sides read
        from caviar.data.datasets import load_dataset

        train = load_dataset("mnist", str(data_dir)).train
        small = folder / "mnist-small.npz"
        np.savez(small, X=train.X[:limit].reshape(limit, -1).astype(np.float32), y=train.y[:limit])
        spec["data"] = {"path": str(small), "label": "y", "validation_fraction": 0.2, "test_fraction": 0.2}
    split = folder / "mnist.npz"
    sizes = write_split(spec, split)
    widths = (784, *hidden, 10)
    rate, rate_line = matmul_rate(mlp_gemm_shapes(widths, batch), repeats=5 if warm else 1)

    def make(n: int, e: int) -> list[Contestant]:
        kw = {"space": "fixed", "trials": n, "epochs": e, "hidden": hidden, "batch": batch, "seed": seed}
        sp = {**spec, "search": {**spec["search"], "trials": n}, "training": {**spec["training"], "epochs": e}}
        return [
            optuna_contestant(
                f"Optuna, {workers} worker processes x 1 torch thread", split, folder, f"mnist-n{n}",
                workers=workers, torch_threads=1, **kw,
            ),
            caviar_contestant(sp, folder, f"mnist-{n}"),
        ]  # fmt: skip

    print(f"\n### MNIST: {trials} trials, {epochs} epochs, 784-256-128-10, batch {batch}, {repeats} repeats")
    print(f"split: {sizes[0]} train, {sizes[1]} validation, {sizes[2]} test; {rate_line}", flush=True)
    if warm:
        warm_up(make(2 * workers, 1))
    contestants = make(trials, epochs)
    runs = race(contestants, repeats)
    title = f"Part MNIST ({trials}-trial random search, real MNIST, {epochs} epochs, whole processes)"
    lines = report_race(title, runs, trials, contestants[-1].label, None)
    flops = study_flops(widths, sizes, epochs, trials)
    caviar_s = runs[contestants[-1].label][0]
    fractions = [flops / s / 1e9 / rate for s in caviar_s]
    frac = float(np.median(fractions))
    verdict = "met" if frac >= MNIST_FRACTION_TARGET else "NOT met"
    line = (
        f"caviar's whole study: {flops / 1e12:.2f} TFLOP of real matmul work at "
        f"{flops / 1e9 / float(np.median(caviar_s)):.1f} GFLOP/s = {spread(fractions)} of the machine's float32 "
        f"matmul rate ({rate:.1f} GFLOP/s; target >= {MNIST_FRACTION_TARGET}: {verdict})"
    )
    print(line)
    return [f"MNIST: {lines[0]}", f"MNIST: {line}"]


# ------------------------------------------------------------------------------- strategies
@dataclass
class Cell:
    """Best validation accuracy of one (dataset, strategy, budget) over the seeds."""

    dataset: str
    strategy: str
    budget: int
    values: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values))


def best_of(values: Sequence[float | None], budget: int) -> float:
    """The best objective among the first ``budget`` trials (failed/diverged ones score nothing)."""
    finite = [v for v in values[:budget] if v is not None]
    return max(finite) if finite else float("nan")


def strategy_cells(
    dataset: str, strategy: str, budgets: Sequence[int], seeds: Sequence[int], epochs: int, folder: Path
) -> list[Cell]:
    """Run one strategy on one dataset over every seed; one Cell per budget."""
    results: dict[int, list[float]] = {b: [] for b in budgets}
    for seed in seeds:
        runs = [max(budgets)] if strategy in PREFIX_STRATEGIES else list(budgets)
        for trials in runs:
            db = folder / f"{dataset}-{strategy}-{seed}-{trials}.db"
            _, values = run_caviar(study_spec(dataset, strategy, trials, epochs, seed, db))
            for b in budgets:
                if b == trials or (strategy in PREFIX_STRATEGIES and b <= trials):
                    results[b].append(best_of(values, b))
    return [Cell(dataset, strategy, b, results[b]) for b in budgets]


def print_table(cells: list[Cell], budgets: Sequence[int]) -> None:
    """mean +- std per dataset x strategy, one column per budget."""
    header = f"{'dataset':10}{'strategy':16}" + "".join(f"{f'budget {b}':>20}" for b in budgets)
    print(header)
    for dataset in dict.fromkeys(c.dataset for c in cells):
        for strategy in STRATEGIES:
            row = {c.budget: c for c in cells if c.dataset == dataset and c.strategy == strategy}
            if row:
                print(
                    f"{dataset:10}{strategy:16}"
                    + "".join(f"{f'{row[b].mean:.4f} +- {row[b].std:.4f}':>20}" for b in budgets)
                )


def compare_c2f_random(cells: list[Cell]) -> None:
    """One line per dataset and budget: is coarse-to-fine's mean at least random's?"""
    by = {(c.dataset, c.strategy, c.budget): c for c in cells}
    for (dataset, strategy, budget), cell in by.items():
        if strategy != "coarse_to_fine":
            continue
        rnd = by[(dataset, "random", budget)]
        sign = ">=" if cell.mean >= rnd.mean else "<"
        print(f"{dataset} budget {budget}: coarse_to_fine {cell.mean:.4f} {sign} random {rnd.mean:.4f}")


def plot(cells: list[Cell], path: Path) -> None:
    """Best validation accuracy vs budget, one line per strategy (+- std band), one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(c.dataset for c in cells))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for strategy in STRATEGIES:
            row = sorted((c for c in cells if c.dataset == dataset and c.strategy == strategy), key=lambda c: c.budget)
            if not row:
                continue
            x = [c.budget for c in row]
            mean, std = np.array([c.mean for c in row]), np.array([c.std for c in row])
            ax.plot(x, mean, marker="o", label=strategy)
            ax.fill_between(x, mean - std, mean + std, alpha=0.15)
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [str(b) for b in x])
        ax.set_xlabel("budget (trials)")
        ax.set_ylabel("best validation accuracy")
        ax.set_title(f"{dataset} ({len(row[0].values)} seeds)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"figure written to {path}")


def part2(
    datasets: Sequence[str], budgets: Sequence[int], seeds: Sequence[int], epochs: int, folder: Path, figure: Path
) -> None:
    """Every strategy at equal budgets over several seeds: a table, a verdict line and a figure."""
    print(f"\n## Part 2: best validation accuracy, budgets {list(budgets)}, seeds {list(seeds)}, {epochs} epochs")
    cells: list[Cell] = []
    for dataset in datasets:
        for strategy in STRATEGIES:
            start = time.perf_counter()
            cells += strategy_cells(dataset, strategy, budgets, seeds, epochs, folder)
            print(f"  {dataset} {strategy}: {time.perf_counter() - start:.0f}s", flush=True)
    print_table(cells, budgets)
    compare_c2f_random(cells)
    plot(cells, figure)


# ------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("1", "mnist", "2"), action="append", help="run this part (repeatable)")
    parser.add_argument("--smoke", action="store_true", help="every part, tiny: 1 repeat, few trials and epochs")
    parser.add_argument("--quick", action="store_true", help="part 2: fewer seeds, budgets and epochs")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved whole-process runs of parts 1 and mnist")
    parser.add_argument(
        "--skip-plain",
        action="store_true",
        help="part 1: leave out Optuna in one process with torch's default threads (very slow on a busy machine)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Optuna worker processes")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="part 2: BLAS threads")
    parser.add_argument("--epochs", type=int, help="override the epochs of every part")
    parser.add_argument("--trials", type=int, help="override the trials of parts 1 and mnist")
    parser.add_argument("--seeds", type=int, help="override the number of seeds of part 2")
    parser.add_argument("--data-dir", type=Path, default=MNIST_DIR, help="MNIST's idx files (default: %(default)s)")
    parser.add_argument("--figure", type=Path, default=FIGURE)
    args = parser.parse_args(argv)
    parts = args.part or (["1", "mnist", "2"] if args.smoke else ["1", "mnist"])
    repeats = 1 if args.smoke else args.repeats

    print(machine_state())
    print(byte_compile_caviar())
    print(describe_blas() or "numpy's BLAS: (threadpoolctl sees none loaded yet)")
    import torch

    print(f"torch {torch.__version__}: default {torch.get_num_threads()} threads in one process; the Optuna workers "
          f"run torch.set_num_threads(1) with OMP_NUM_THREADS=MKL_NUM_THREADS=1")  # fmt: skip
    summary: list[str] = []
    with tempfile.TemporaryDirectory(prefix="caviar-bench-") as tmp:
        folder = Path(tmp)
        if "1" in parts:
            summary += part1(
                trials=args.trials or (4 if args.smoke else 64),
                epochs=args.epochs or (1 if args.smoke else 20),
                seed=0, workers=args.workers, repeats=repeats, folder=folder, warm=not args.smoke,
                plain=not args.skip_plain,
            )  # fmt: skip
        if "mnist" in parts:
            summary += part_mnist(
                trials=args.trials or (2 if args.smoke else 32),
                epochs=args.epochs or (1 if args.smoke else 5),
                seed=0, workers=args.workers, repeats=repeats, folder=folder, data_dir=args.data_dir.resolve(),
                limit=600 if args.smoke else None, warm=not args.smoke,
            )  # fmt: skip
        if "2" in parts:
            limiter = set_threads(args.threads)  # noqa: F841 (kept alive: the limit holds while it lives)
            budgets = (2, 4) if args.smoke else (16, 32) if args.quick else (16, 32, 64)
            seeds = range(args.seeds or (1 if args.smoke else 2 if args.quick else 5))
            epochs = args.epochs or (1 if args.smoke else 8 if args.quick else 20)
            part2(("digits", "mnist1d"), budgets, list(seeds), epochs, folder, args.figure)
    if summary:
        print("\n## Summary (the strongest anchor first)")
        for line in summary:
            print(line)


if __name__ == "__main__":
    main()
