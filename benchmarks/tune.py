"""Tuning benchmarks: caviar against Optuna + PyTorch, and the search strategies at equal budgets.

Part 1: one 64-trial random search on digits, the same space, model, optimizer, batches, epochs and
split on both sides: caviar (``run_study``, SQLite storage, trials packed into populations) against
Optuna (``RandomSampler``, SQLite storage, ``study.optimize``) driving a PyTorch training loop (one
trial at a time, float32, as many torch threads as caviar's BLAS threads). Prints wall times, their
ratio and both best validation accuracies.

Part 2: best validation accuracy at budgets 16, 32 and 64 for random, sobol, coarse_to_fine and tpe,
on digits and mnist1d, over several seeds: mean +- std, and whether coarse-to-fine >= random. Random,
Sobol and TPE propose trial n from (seed, n) and the batches before it, whatever the budget, so a
budget-b result is the best of the first b trials of one 64-trial study; coarse-to-fine splits its
budget into rounds, so it runs once per budget. Writes docs/img/strategies.png.

    python benchmarks/tune.py                 # both parts, full size
    python benchmarks/tune.py --quick         # fewer seeds, budgets and epochs
    python benchmarks/tune.py --part 1        # only caviar vs Optuna + PyTorch

Figures are measured, never asserted; docs/benchmarks.md (## Tuning) records them.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe_blas, set_threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIGURE = ROOT / "docs" / "img" / "strategies.png"
HIDDEN = (128, 64)
BATCH = 64
SPACE = {
    "learning_rate": {"low": 1e-4, "high": 3e-2, "scale": "log"},
    "beta1": {"low": 0.8, "high": 0.99, "scale": "one_minus_log"},
    "beta2": {"low": 0.99, "high": 0.9999, "scale": "one_minus_log"},
    "l2": {"low": 1e-6, "high": 1e-2, "scale": "log"},
}
STRATEGIES = ("random", "sobol", "coarse_to_fine", "tpe")
PREFIX_STRATEGIES = ("random", "sobol", "tpe")  # trial n does not depend on the budget


# ------------------------------------------------------------------------------------------- specs
def study_spec(
    dataset: str, strategy: str, trials: int, epochs: int, seed: int, storage: Path, name: str = "bench"
) -> dict[str, Any]:
    """The study both sides run: model 64-128-64-10 (digits) with BN + ReLU, Adam, batch 64."""
    search: dict[str, Any] = {"strategy": strategy, "trials": trials, "storage": str(storage), "max_population": 64}
    if strategy == "coarse_to_fine":
        search.update(rounds=2, top_fraction=0.25)
    return {
        "study": {"name": name, "seed": seed},
        "data": {"dataset": dataset, "validation_fraction": 0.2, "test_fraction": 0.2},
        "model": {"hidden": list(HIDDEN), "activation": "relu", "batchnorm": True},
        "training": {"optimizer": "adam", "epochs": epochs, "batch_size": BATCH},
        "search": search,
        "space": SPACE,
    }


def warm_up_caviar(spec: dict[str, Any], folder: Path) -> None:
    """One tiny study (2 trials, 1 epoch, its own database) before the clock: the first one in a
    process imports scikit-learn for the data set (1-2 s) and loads the compiled kernels, costs of
    the process, not of the study. The PyTorch side gets the same (``run_optuna``)."""
    tiny = {
        **spec,
        "study": {**spec["study"], "name": "warm-up"},
        "training": {**spec["training"], "epochs": 1},
        "search": {**spec["search"], "trials": 2, "storage": str(folder / "warm-up.db")},
    }
    run_caviar(tiny)


def run_caviar(spec: dict[str, Any]) -> tuple[float, list[float | None]]:
    """Run a study; returns its wall time and the objective of each trial, by number."""
    from caviar.tune.study import run_study

    start = time.perf_counter()
    study = run_study(spec)
    seconds = time.perf_counter() - start
    return seconds, [t.objective for t in study.trials]


# ------------------------------------------------------------------------------ Optuna + PyTorch
def torch_model(n_in: int, n_out: int) -> Any:
    """Linear (no bias) - BatchNorm1d - ReLU per hidden layer, then Linear; He-normal weights like caviar."""
    import torch
    from torch import nn

    layers: list[nn.Module] = []
    width = n_in
    for h in HIDDEN:
        layers += [nn.Linear(width, h, bias=False), nn.BatchNorm1d(h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_out))
    model = nn.Sequential(*layers)
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model.to(torch.float32)


def torch_trial(data: Any, lr: float, beta1: float, beta2: float, l2: float, epochs: int, seed: int) -> float:
    """Train one model like a caviar member; the validation accuracy at the epoch of lowest validation
    loss (caviar's objective)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    Xtr, ytr, Xva, yva = data
    model = torch_model(Xtr.shape[1], int(ytr.max()) + 1)
    weights = [m.weight for m in model if isinstance(m, nn.Linear)]
    others = [p for p in model.parameters() if all(p is not w for w in weights)]
    opt = torch.optim.Adam(
        [{"params": weights, "weight_decay": l2}, {"params": others, "weight_decay": 0.0}],
        lr=lr,
        betas=(beta1, beta2),
        eps=1e-8,
    )
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    best_loss, best_acc = float("inf"), 0.0
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(ytr), generator=gen).split(BATCH):
            if len(idx) < 2:  # BatchNorm needs two rows
                continue
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(Xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(Xva)
            val_loss = float(loss_fn(logits, yva))
            val_acc = float((logits.argmax(1) == yva).float().mean())
        if np.isfinite(val_loss) and val_loss < best_loss:
            best_loss, best_acc = val_loss, val_acc
    return best_acc


def run_optuna(spec: dict[str, Any], storage: Path) -> tuple[float, list[float]]:
    """Optuna's RandomSampler over the same space (one-minus-log betas as log-uniform 1 - beta), SQLite
    storage, one PyTorch trial at a time; returns wall time and each trial's value."""
    import optuna
    import torch

    from caviar.tune.planning import load_data
    from caviar.tune.spec import load_spec

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    d = load_data(load_spec(spec))  # caviar's split and standardization: the same data on both sides
    data = (
        torch.from_numpy(d.X_train),
        torch.from_numpy(d.y_train).long(),
        torch.from_numpy(d.X_val),
        torch.from_numpy(d.y_val).long(),
    )
    epochs, seed = spec["training"]["epochs"], spec["study"]["seed"]
    torch_trial(data, 1e-3, 0.9, 0.999, 0.0, 1, seed)  # warm-up, as caviar's: torch's first ops initialize

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True)
        beta1 = 1 - trial.suggest_float("one_minus_beta1", 1 - 0.99, 1 - 0.8, log=True)
        beta2 = 1 - trial.suggest_float("one_minus_beta2", 1 - 0.9999, 1 - 0.99, log=True)
        l2 = trial.suggest_float("l2", 1e-6, 1e-2, log=True)
        return torch_trial(data, lr, beta1, beta2, l2, epochs, seed * 100_003 + trial.number)

    start = time.perf_counter()
    study = optuna.create_study(
        direction="maximize", storage=f"sqlite:///{storage}", sampler=optuna.samplers.RandomSampler(seed=seed)
    )
    study.optimize(objective, n_trials=spec["search"]["trials"])
    seconds = time.perf_counter() - start
    return seconds, [t.value for t in study.trials]


def part1(trials: int, epochs: int, seed: int, threads: int, folder: Path) -> None:
    """caviar vs Optuna + PyTorch on the same 64-trial random search."""
    import optuna
    import torch

    spec = study_spec("digits", "random", trials, epochs, seed, folder / "caviar.db", name="part1")
    print(
        f"\n## Part 1: {trials}-trial random search on digits, {epochs} epochs, model 64-{HIDDEN[0]}-"
        f"{HIDDEN[1]}-10 BN+ReLU, Adam, batch {BATCH}, {threads} threads"
    )
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), optuna {optuna.__version__}")
    warm_up_caviar(spec, folder)
    c_time, c_values = run_caviar(spec)
    o_time, o_values = run_optuna(spec, folder / "optuna.db")
    c_best = max(v for v in c_values if v is not None)
    o_best = max(v for v in o_values if v is not None)
    print(f"{'':28}{'wall s':>10}{'s/trial':>10}{'best val acc':>14}")
    print(f"{'caviar (run_study)':28}{c_time:10.1f}{c_time / trials:10.3f}{c_best:14.4f}")
    print(f"{'Optuna + PyTorch':28}{o_time:10.1f}{o_time / trials:10.3f}{o_best:14.4f}")
    verdict = "met" if o_time / c_time >= 10 else "NOT met"
    print(
        f"speed-up caviar / Optuna+PyTorch: {o_time / c_time:.1f}x (target >= 10x: {verdict}); "
        f"best accuracy: caviar {'>=' if c_best >= o_best else '<'} Optuna+PyTorch"
    )


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
def machine() -> str:
    """CPU, cores and Python, for the record."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds, budgets and epochs")
    parser.add_argument("--part", type=int, choices=(1, 2), help="run only this part")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="BLAS and torch threads")
    parser.add_argument("--epochs", type=int, help="override the epochs of both parts")
    parser.add_argument("--seeds", type=int, help="override the number of seeds of part 2")
    parser.add_argument("--figure", type=Path, default=FIGURE)
    args = parser.parse_args(argv)

    limiter = set_threads(args.threads)  # noqa: F841 (kept alive: the limit holds while it lives)
    print(f"machine: {machine()}")
    print(describe_blas())
    with tempfile.TemporaryDirectory(prefix="caviar-bench-") as tmp:
        folder = Path(tmp)
        if args.part in (None, 1):
            part1(
                trials=64, epochs=args.epochs or (8 if args.quick else 20), seed=0, threads=args.threads, folder=folder
            )
        if args.part in (None, 2):
            budgets = (16, 32) if args.quick else (16, 32, 64)
            seeds = range(args.seeds or (2 if args.quick else 5))
            datasets = ("digits", "mnist1d")
            part2(datasets, budgets, list(seeds), args.epochs or (8 if args.quick else 20), folder, args.figure)


if __name__ == "__main__":
    main()
