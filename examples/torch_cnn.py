"""A small PyTorch CNN on MNIST tuned by caviar: your training loop; caviar's search, storage, dashboard, live control.

The objective reads its learning rate (log scale) and Adam's betas (one-minus-log scale) from the
trial, reports each epoch's curves (stored with the study, drawn by the dashboard), asks
``trial.should_stop()`` (successive halving from the spec), and returns the validation accuracy.
Data: MNIST's IDX files in ``../shared/data/mnist`` beside the repository (or ``$CAVIAR_SHARED_DATA/mnist``),
read by caviar's MNIST loader; a 6000-image subset so a study runs in about a minute.

    python examples/torch_cnn.py                       # optimize(): 12 trials, coarse-to-fine, 2 workers
    caviar tune examples/torch_cnn.toml                # the same study from the spec ([objective] target)
    caviar dashboard --storage examples/torch_cnn.db   # the trials, each parameter on its scale, the curves
    python examples/torch_cnn.py --live                # babysit one model: caviar ctl set lr=0.0005, pause, stop

torch runs one thread per process (the worker processes share the cores).
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SUBSET = int(os.environ.get("CAVIAR_EXAMPLE_SUBSET", "6000"))  # training images (validation: a sixth of it)
EPOCHS = int(os.environ.get("CAVIAR_EXAMPLE_EPOCHS", "3"))


def mnist_dir() -> Path:
    """MNIST's folder: ``$CAVIAR_SHARED_DATA/mnist``, else ``../shared/data/mnist`` beside the repository."""
    root = os.environ.get("CAVIAR_SHARED_DATA")
    return Path(root) / "mnist" if root else HERE.parent.parent / "shared" / "data" / "mnist"


@lru_cache(maxsize=1)
def data() -> tuple[Any, Any, Any, Any]:
    """A seeded subset of MNIST's training images as (N, 1, 28, 28) tensors (caviar's loader scales them to [0, 1])."""
    import numpy as np
    import torch

    from caviar.data import load_dataset

    train = load_dataset("mnist", mnist_dir()).train
    rng = np.random.default_rng(0)
    n_val = max(1, SUBSET // 6)
    idx = rng.permutation(len(train.y))[: SUBSET + n_val]
    X = torch.tensor(train.X[idx].reshape(-1, 1, 28, 28), dtype=torch.float32)
    y = torch.tensor(train.y[idx], dtype=torch.long)
    return X[:SUBSET], y[:SUBSET], X[SUBSET:], y[SUBSET:]


def make_model() -> Any:
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 10),
    )  # fmt: skip


def objective(trial: Any) -> dict[str, float]:
    """Train the CNN with the trial's Adam settings; the live values (``trial.hyperparameters``) each epoch."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(trial.number)
    X, y, Xv, yv = data()
    model = make_model().float()  # float32 whatever torch's default dtype is
    hp = trial.hyperparameters  # the params, as live controls change them
    opt = torch.optim.Adam(model.parameters(), lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]))
    loss_fn = torch.nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(trial.number)
    metrics: dict[str, float] = {}
    for epoch in range(EPOCHS):
        hp = trial.hyperparameters
        for group in opt.param_groups:
            group["lr"], group["betas"] = hp["lr"], (hp["beta1"], hp["beta2"])
        model.train()
        total, correct, seen = 0.0, 0, 0
        for batch in torch.randperm(len(y), generator=g).split(128):
            opt.zero_grad()
            out = model(X[batch])
            loss = loss_fn(out, y[batch])
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
            correct += int((out.argmax(1) == y[batch]).sum())
            seen += len(batch)
        model.eval()
        with torch.no_grad():
            out = model(Xv)
            metrics = {
                "train_loss": total / seen,
                "train_accuracy": correct / seen,
                "val_loss": float(loss_fn(out, yv)),
                "val_accuracy": float((out.argmax(1) == yv).float().mean()),
            }
        trial.report(epoch, **metrics)  # the curve the dashboard draws; live controls land here
        if trial.should_stop():  # successive halving ([search.halving]) or a live stop
            break
    return metrics


def live_objective(trial: Any) -> dict[str, float]:
    """``objective`` under live control: the panda page's API and ``caviar ctl`` steer it."""
    control = trial.live()
    print(f"live trial #{trial.number}: {control.url}/?token={control.token}   (caviar ctl status | set lr=...)")
    return objective(trial)


def main() -> None:
    from caviar.tune import optimize

    spec = HERE / "torch_cnn.toml"
    if "--live" in sys.argv:  # one long trial to babysit
        os.environ.setdefault("CAVIAR_EXAMPLE_EPOCHS", "30")
        study = optimize(live_objective, spec, trials=1, workers=1, strategy="random", name="torch_cnn_live")
    else:
        study = optimize("torch_cnn:objective", spec)  # module:function, so worker processes import it
    best = study.best_trial
    print(f"{len(study.trials)} trials; best #{best.number}: val_accuracy {best.metrics['val_accuracy']:.4f}")
    print("  " + ", ".join(f"{k} = {v:.4g}" for k, v in best.params.items()))
    print(f"next: caviar dashboard --storage {study.storage.url.removeprefix('sqlite:///')}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
