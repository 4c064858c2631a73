"""Search that only a population can do, against Optuna at equal wall time (issue 10).

On each data set and seed, four searches of one space (learning rate on a log scale, Adam's beta1 on
one-minus-log, a fixed MLP):

- caviar PBT (``strategy = "pbt"``), caviar random + successive halving, caviar Hyperband;
- Optuna's TPE with its median pruner driving PyTorch, one worker process per core, torch on one
  thread each, on the same splits, given the wall time of the slowest caviar search (``timeout``).

Each prints its wall time and the test accuracy of its best trial by validation accuracy. Then the
ensemble of the top 5 trials (``Study.ensemble(5)``) against the best single trial of the random +
halving and PBT studies: the test-accuracy margin. The data sets are digits, MNIST-1D and MNIST,
MNIST read from ``../shared/data/mnist`` relative to the repository root unless ``--data-dir`` says
otherwise. The caviar searches run in this process on every core (``--threads``: the population's
slices side by side, one BLAS thread each), as Optuna gets a worker process per core.

    python benchmarks/population_search.py --seeds 5            # the full run (minutes per data set)
    python benchmarks/population_search.py --smoke              # seconds: the test suite's check
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_state, set_threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "learning_rate": {"low": 1e-4, "high": 3e-2, "scale": "log"},
    "beta1": {"low": 0.8, "high": 0.99, "scale": "one_minus_log"},
}
METHODS = ("caviar PBT", "caviar random + halving", "caviar Hyperband", "Optuna TPE + median pruner")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=32, help="trials of each caviar search")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--hidden", default="128-64")
    ap.add_argument("--datasets", default="digits,mnist1d,mnist", help="comma-separated, of digits, mnist1d, mnist")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--smoke", action="store_true", help="tiny settings: the test suite's end-to-end check")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Optuna worker processes")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="caviar's threads (population slices)")
    args = ap.parse_args(argv)
    unknown = set(args.datasets.split(",")) - {"digits", "mnist1d", "mnist"}
    if unknown:
        ap.error(f"--datasets: unknown {', '.join(sorted(unknown))}; of digits, mnist1d, mnist")
    if "mnist" in args.datasets.split(",") and not any(Path(args.data_dir).glob("train-images-idx3-ubyte*")):
        ap.error(f"--data-dir: no MNIST idx files in {args.data_dir} (or leave mnist out of --datasets)")
    if args.smoke:
        args.seeds, args.trials, args.epochs, args.hidden = 1, 8, 3, "32"
    return args


def spec_for(args: argparse.Namespace, dataset: str, seed: int, storage: str, **search: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"dataset": dataset}
    if dataset == "mnist":
        data["data_dir"] = args.data_dir
    return {
        "study": {"name": "bench", "seed": seed},
        "data": data,
        "model": {"hidden": [int(w) for w in args.hidden.split("-")]},
        "training": {"epochs": args.epochs, "batch_size": 64},
        "search": {"trials": args.trials, "storage": storage, **search},
        "space": SPACE,
    }


def best_test(study: Any) -> float:
    """Test accuracy of the best trial by validation accuracy."""
    return float(study.best_trial.metrics["test_accuracy"])


def caviar_searches(args: argparse.Namespace, dataset: str, seed: int, folder: Path) -> dict[str, tuple]:
    from caviar.tune.study import run_study

    interval = max(1, args.epochs // 4)
    searches = {
        "caviar PBT": {"strategy": "pbt", "pbt": {"perturbation_interval": interval, "population_size": args.trials}},
        "caviar random + halving": {"strategy": "random", "halving": {"eta": 3, "min_epochs": 1}},
        "caviar Hyperband": {"strategy": "random", "hyperband": {"eta": 3}},
    }
    out = {}
    for i, (name, search) in enumerate(searches.items()):
        url = f"sqlite:///{folder / f'{dataset}-{seed}-{i}.db'}"
        t0 = time.perf_counter()
        study = run_study(spec_for(args, dataset, seed, url, **search))
        out[name] = (time.perf_counter() - t0, best_test(study), study)
    return out


# ------------------------------------------------------------------------------- Optuna with PyTorch
def optuna_worker(npz: str, storage: str, seed: int, index: int, timeout: float, epochs: int, hidden: str) -> None:
    import optuna
    import torch
    from torch import nn

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    d = np.load(npz)
    Xtr, ytr = torch.tensor(d["X_train"]), torch.tensor(d["y_train"]).long()
    Xva, yva = torch.tensor(d["X_val"]), torch.tensor(d["y_val"]).long()
    Xte, yte = torch.tensor(d["X_test"]), torch.tensor(d["y_test"]).long()
    widths = [Xtr.shape[1], *(int(w) for w in hidden.split("-")), int(d["n_classes"])]

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True)
        b1 = 1 - trial.suggest_float("one_minus_beta1", 0.01, 0.2, log=True)
        torch.manual_seed(seed * 1000 + trial.number)
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-2], widths[1:-1], strict=True):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
        model = nn.Sequential(*layers, nn.Linear(widths[-2], widths[-1]))
        opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(b1, 0.999))
        loss_fn = nn.CrossEntropyLoss()
        acc = 0.0
        for epoch in range(epochs):
            model.train()
            for idx in torch.randperm(len(ytr)).split(64):
                if len(idx) < 2:
                    continue
                opt.zero_grad()
                loss_fn(model(Xtr[idx]), ytr[idx]).backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                acc = float((model(Xva).argmax(1) == yva).float().mean())
                trial.set_user_attr("test_accuracy", float((model(Xte).argmax(1) == yte).float().mean()))
            trial.report(acc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return acc

    study = optuna.load_study(
        study_name="bench",
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=seed * 100 + index),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1),
    )
    study.optimize(objective, timeout=timeout)


def optuna_search(args: argparse.Namespace, dataset: str, seed: int, folder: Path, timeout: float) -> tuple:
    import optuna

    from caviar.tune.planning import load_data
    from caviar.tune.spec import load_spec

    data = load_data(load_spec(spec_for(args, dataset, seed, "sqlite:///:memory:")))
    npz = folder / f"{dataset}-{seed}.npz"
    np.savez(
        npz,
        X_train=data.X_train,
        y_train=data.y_train,
        X_val=data.X_val,
        y_val=data.y_val,
        X_test=data.X_test,
        y_test=data.y_test,
        n_classes=data.n_classes,
    )
    storage = f"sqlite:///{folder / f'optuna-{dataset}-{seed}.db'}"
    optuna.create_study(study_name="bench", storage=storage, direction="maximize")
    spawn = mp.get_context("spawn")
    t0 = time.perf_counter()
    procs = [
        spawn.Process(target=optuna_worker, args=(str(npz), storage, seed, i, timeout, args.epochs, args.hidden))
        for i in range(args.workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    total = time.perf_counter() - t0
    study = optuna.load_study(study_name="bench", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(done, key=lambda t: (t.value, -t.number))
    # the search's own wall time: first trial started to last trial ended (process start-up and
    # torch's import, several seconds on a loaded machine, are outside the timeout and reported apart)
    ends = [t.datetime_complete for t in study.trials if t.datetime_complete is not None]
    starts = [t.datetime_start for t in study.trials if t.datetime_start is not None]
    wall = (max(ends) - min(starts)).total_seconds()
    return wall, float(best.user_attrs["test_accuracy"]), len(study.trials), total


# ------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    from caviar.tune.ensemble import ensemble_report

    _limit = set_threads(args.threads)  # noqa: F841 (kept alive: caviar's population slices, one per thread)
    print(machine_state())
    print(
        f"settings: {args.trials} trials x {args.epochs} epochs, hidden {args.hidden}, {args.seeds} seeds, "
        f"caviar {args.threads} threads in one process, Optuna {args.workers} worker processes x 1 torch thread"
    )
    datasets = args.datasets.split(",")
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    margins: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for dataset in datasets:
            for seed in range(args.seeds):
                runs = caviar_searches(args, dataset, seed, folder)
                budget = max(wall for wall, _, _ in runs.values())
                wall, acc, n, total = optuna_search(args, dataset, seed, folder, budget)
                print(
                    f"{dataset} seed {seed}: Optuna ran {n} trials in {wall:.1f} s (timeout {budget:.1f} s; "
                    f"{total:.1f} s with starting its worker processes)"
                )
                for name, (w, a, _) in runs.items():
                    results.setdefault((dataset, name), []).append((w, a))
                results.setdefault((dataset, METHODS[3]), []).append((wall, acc))
                for name in ("caviar random + halving", "caviar PBT"):
                    study = runs[name][2]
                    k = min(5, sum(t.objective is not None for t in study.trials))
                    rep = ensemble_report(study, study.ensemble(k))
                    margin = rep["ensemble"]["test_accuracy"] - rep["best_trial"]["test_accuracy"]
                    margins.setdefault((dataset, name), []).append(100 * margin)
    print("\n### Best test accuracy at equal wall time (mean +- std over seeds)\n")
    print("| data | search | wall s | best test accuracy |")
    print("|---|---|---|---|")
    for (dataset, name), rows in results.items():
        w = np.array([r[0] for r in rows])
        a = np.array([r[1] for r in rows])
        print(f"| {dataset} | {name} | {w.mean():.1f} | {a.mean():.4f} +- {a.std():.4f} |")
    print("\n### Ensemble of the top 5 against the best single trial (test accuracy, points)\n")
    print("| data | study | margin (points) |")
    print("|---|---|---|")
    for (dataset, name), values in margins.items():
        v = np.array(values)
        print(f"| {dataset} | {name} | {v.mean():+.2f} +- {v.std():.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
