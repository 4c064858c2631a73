"""The Optuna + PyTorch anchor as a careful user runs it: one SQLite study, one worker process per core.

Optuna's documentation for parallel work: create one study in a relational storage, then start N
processes that each load it (``load_if_exists=True``) and call ``study.optimize`` with their share of
the trials; a small network trains fastest with torch on one thread per process. This script is that
user's command, standalone (numpy, optuna and torch only; no caviar):

    python benchmarks/optuna_torch.py --data split.npz --storage sqlite:///o.db --workers 2 --trials 64
    python benchmarks/optuna_torch.py --data split.npz --storage sqlite:///o.db --workers 1 --torch-threads 0

``--workers N`` (N > 1) creates the study, starts N copies of itself (``--worker-index i``, torch on
``--torch-threads`` threads, OMP/MKL set to the same) and waits for them all. ``--workers 1`` runs the
whole study in this process (``--torch-threads 0``: torch's default threads, the plain user's figure).

The data is a split written by benchmarks/tune.py: X_train, y_train, X_val, y_val (float32 standardized
features, int64 labels), the very arrays caviar's study trains on. The objective is caviar's: the
validation accuracy at the epoch of lowest validation loss.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence

#: The mixed space's hidden layers, as Optuna's categorical values (strings: Optuna stores primitives).
HIDDEN_CHOICES = ("64", "128", "128-64", "256-128")
BATCH_CHOICES = (32, 64, 128)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="an .npz with X_train, y_train, X_val, y_val")
    ap.add_argument("--storage", required=True, help="an RDB URL, e.g. sqlite:///optuna.db")
    ap.add_argument("--study-name", default="bench")
    ap.add_argument("--space", choices=("fixed", "mixed"), default="fixed")
    ap.add_argument("--trials", type=int, default=64, help="the study's total trials")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--hidden", default="128-64", help="hidden widths of the fixed space, '-' separated")
    ap.add_argument("--batch", type=int, default=64, help="batch size of the fixed space")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (1: this one)")
    ap.add_argument("--torch-threads", type=int, default=1, help="torch threads per worker (0: torch's default)")
    ap.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n-trials", type=int, default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a worker: OpenMP and MKL on ``threads`` threads (0: left as they are)."""
    env = dict(os.environ)
    if threads > 0:
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[k] = str(threads)
    return env


def launch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Create the study, start ``args.workers`` worker processes with their shares of the trials, wait."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name=args.study_name, storage=args.storage, direction="maximize", load_if_exists=True)
    shares = [args.trials // args.workers + (i < args.trials % args.workers) for i in range(args.workers)]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, *argv, "--worker-index", str(i), "--n-trials", str(n)],
            env=thread_env(args.torch_threads),
        )
        for i, n in enumerate(shares)
        if n > 0
    ]
    codes = [p.wait() for p in procs]
    return max(codes, default=0)


def worker(args: argparse.Namespace) -> None:
    """Load the study and optimize this worker's share of the trials."""
    if args.torch_threads > 0:  # before torch is imported, so that its OpenMP pool is sized so
        os.environ.update({k: v for k, v in thread_env(args.torch_threads).items() if k.endswith("_NUM_THREADS")})
    import numpy as np
    import optuna
    import torch
    from torch import nn

    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with np.load(args.data) as f:
        Xtr, ytr = torch.from_numpy(f["X_train"]), torch.from_numpy(f["y_train"]).long()
        Xva, yva = torch.from_numpy(f["X_val"]), torch.from_numpy(f["y_val"]).long()
    n_in, n_out = Xtr.shape[1], int(ytr.max()) + 1
    loss_fn = nn.CrossEntropyLoss()

    def model_of(hidden: Sequence[int], dropout: float) -> nn.Module:
        """Linear (no bias) - BatchNorm1d - ReLU [- Dropout] per hidden layer, then Linear; He-normal."""
        layers: list[nn.Module] = []
        width = n_in
        for h in hidden:
            layers += [nn.Linear(width, h, bias=False), nn.BatchNorm1d(h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, n_out))
        model = nn.Sequential(*layers)
        for m in model:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        return model

    def train(hidden: Sequence[int], batch: int, dropout: float, lr: float, b1: float, b2: float, l2: float, seed: int):
        torch.manual_seed(seed)
        model = model_of(hidden, dropout)
        weights = [m.weight for m in model if isinstance(m, nn.Linear)]
        others = [p for p in model.parameters() if all(p is not w for w in weights)]
        opt = torch.optim.Adam(
            [{"params": weights, "weight_decay": l2}, {"params": others, "weight_decay": 0.0}], lr=lr, betas=(b1, b2)
        )
        gen = torch.Generator().manual_seed(seed)
        best_loss, best_acc = float("inf"), 0.0
        for _ in range(args.epochs):
            model.train()
            for idx in torch.randperm(len(ytr), generator=gen).split(batch):
                if len(idx) < 2:  # batch norm needs two rows (caviar joins a last batch of one to the previous)
                    continue
                opt.zero_grad(set_to_none=True)
                loss_fn(model(Xtr[idx]), ytr[idx]).backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                logits = model(Xva)
                val_loss = float(loss_fn(logits, yva))
                val_acc = float((logits.argmax(1) == yva).float().mean())
            if np.isfinite(val_loss) and val_loss < best_loss:
                best_loss, best_acc = val_loss, val_acc
        return best_acc

    fixed_hidden = [int(h) for h in args.hidden.split("-")]

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True)
        b1 = 1 - trial.suggest_float("one_minus_beta1", 1 - 0.99, 1 - 0.8, log=True)
        b2 = 1 - trial.suggest_float("one_minus_beta2", 1 - 0.9999, 1 - 0.99, log=True)
        l2 = trial.suggest_float("l2", 1e-6, 1e-2, log=True)
        hidden, batch, dropout = fixed_hidden, args.batch, 0.0
        if args.space == "mixed":
            hidden = [int(h) for h in trial.suggest_categorical("hidden", HIDDEN_CHOICES).split("-")]
            batch = trial.suggest_categorical("batch_size", BATCH_CHOICES)
            dropout = trial.suggest_float("dropout", 0.0, 0.3)
        return train(hidden, batch, dropout, lr, b1, b2, l2, args.seed * 100_003 + trial.number)

    index = args.worker_index or 0
    study = optuna.create_study(
        study_name=args.study_name,
        storage=args.storage,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.RandomSampler(seed=args.seed * 1000 + index),  # each worker its own stream
    )
    study.optimize(objective, n_trials=args.n_trials if args.n_trials is not None else args.trials)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.worker_index is None and args.workers > 1:
        return launch(args, argv)
    worker(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
