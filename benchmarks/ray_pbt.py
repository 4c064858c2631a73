"""Time to a target validation accuracy: caviar's PBT against Ray Tune's PBT driving PyTorch (issue 10).

One space (Adam's learning rate on a log scale, its beta1 on one-minus-log), one MLP with batch norm
(caviar's default model), the same standardized splits, the same population size, perturbation
interval, quantile fraction, perturbation factors and resample probability:

- caviar: ``strategy = "pbt"``, the population trained as one stacked network in this process (its
  slices on every core, one BLAS thread each); exploit is an index copy between two steps.
- Ray Tune: ``ray.tune.schedulers.PopulationBasedTraining`` over a function trainable in PyTorch, one
  trial per core (``{"cpu": 1}``), torch on one thread per trial, a checkpoint every perturbation
  interval (Ray's exploit restores one: that is how its PBT copies a member), stopped as soon as any
  trial reaches the target; actors reused between trials (``reuse_actors=True``, as Ray's PBT
  warning advises). A local cluster bound to 127.0.0.1, no dashboard.

Each side's time is from the start of its search (caviar: ``run_study``; Ray: ``Tuner.fit``, its
trial processes starting inside it) to the first epoch at which a member's validation accuracy
reaches the target; the start-up that precedes it (caviar's compiled kernels warmed by a tiny study,
``ray.init``) is printed apart. Then the ratio Ray / caviar, and the machine's state.

    python benchmarks/ray_pbt.py                      # the full run: MNIST-1D, target 0.65, 16 members

The default target is 0.65, not the issue's example of 0.76: an MLP's ceiling on MNIST-1D is about 0.68
(the data set's paper; a 4-member caviar PBT of 30 epochs reached 0.66 here), 0.76 takes a CNN.
    python benchmarks/ray_pbt.py --smoke              # seconds: the test suite's check (digits, low target)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe_blas, machine_state, set_threads, torch_threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "learning_rate": {"low": 1e-4, "high": 3e-2, "scale": "log"},
    "beta1": {"low": 0.8, "high": 0.99, "scale": "one_minus_log"},
}
#: Ray's PBT defaults, which caviar's [search.pbt] keys share (names and values)
QUANTILE, FACTORS, RESAMPLE = 0.25, (1.2, 0.8), 0.25
BATCH = 64


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="mnist1d", help="a bundled data set (mnist1d, digits...)")
    ap.add_argument("--target", type=float, default=0.65, help="the validation accuracy to reach")
    ap.add_argument("--population", type=int, default=16, help="members of each PBT population")
    ap.add_argument("--epochs", type=int, default=60, help="the most epochs a member trains")
    ap.add_argument("--interval", type=int, default=2, help="perturbation interval, epochs")
    ap.add_argument("--hidden", default="256-128")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"), help="MNIST's folder")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="cores for both sides")
    ap.add_argument("--smoke", action="store_true", help="tiny settings: the test suite's end-to-end check")
    args = ap.parse_args(argv)
    if args.smoke:
        args.dataset, args.target, args.population, args.epochs, args.hidden = "digits", 0.5, 4, 4, "32"
        args.cpus = min(args.cpus, 2)
    return args


def spec_for(args: argparse.Namespace, storage: str, trials: int | None = None, epochs: int | None = None) -> dict:
    return {
        "study": {"name": "ray-pbt", "seed": args.seed},
        "data": {"dataset": args.dataset, **({"data_dir": args.data_dir} if args.dataset == "mnist" else {})},
        "model": {"hidden": [int(w) for w in args.hidden.split("-")]},
        "training": {"epochs": epochs or args.epochs, "batch_size": BATCH},
        "search": {
            "strategy": "pbt",
            "trials": trials or args.population,
            "storage": storage,
            "seed": args.seed,
            "pbt": {
                "population_size": trials or args.population,
                "perturbation_interval": min(args.interval, (epochs or args.epochs) - 1),
                "quantile_fraction": QUANTILE,
                "perturbation_factors": list(FACTORS),
                "resample_probability": RESAMPLE,
            },
        },
        "space": SPACE,
    }


# ------------------------------------------------------------------------------------------ caviar
class _FirstReach:
    """A progress callback: the time of the first epoch end whose best member reaches the target."""

    def __init__(self, target: float, t0: float) -> None:
        self.target, self.t0 = target, t0
        self.reached: float | None = None
        self.epoch: int | None = None
        self.best = -np.inf

    def __call__(self, counts: Any, best: Any) -> None:
        return None

    def on_epoch(self, ev: Any) -> None:
        if ev.best is not None:
            self.best = max(self.best, ev.best)
            if self.reached is None and ev.best >= self.target:
                self.reached, self.epoch = time.perf_counter() - self.t0, ev.epoch


def caviar_pbt(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from caviar.tune.study import run_study

    t0 = time.perf_counter()  # compiled kernels and the data set's cache, warmed by a tiny study
    run_study(spec_for(args, f"sqlite:///{folder / 'warm.db'}", trials=2, epochs=2))
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    reach = _FirstReach(args.target, t0)
    study = run_study(spec_for(args, f"sqlite:///{folder / 'caviar.db'}"), on_progress=reach)
    total = time.perf_counter() - t0
    copies = sum(len(t.metrics.get("lineage") or ()) for t in study.trials)
    return {"reached": reach.reached, "epoch": reach.epoch, "best": reach.best, "total": total, "warm": warm,
            "copies": copies}  # fmt: skip


# --------------------------------------------------------------------------------------------- Ray
def _mlp(n_in: int, hidden: str, n_out: int) -> Any:
    from torch import nn

    widths = [n_in, *(int(w) for w in hidden.split("-"))]
    layers: list[Any] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], n_out))


def ray_trainable(config: dict[str, Any], data: dict[str, np.ndarray], hidden: str, epochs: int, interval: int) -> None:
    """One Ray Tune trial: Adam on the MLP, a report per epoch, a checkpoint every ``interval`` epochs,
    restored when PBT exploits (weights, optimizer state, the epoch reached)."""
    import torch
    from ray import tune
    from torch import nn

    torch.set_num_threads(1)
    Xtr, ytr = torch.from_numpy(data["X_train"]), torch.from_numpy(data["y_train"]).long()
    Xva, yva = torch.from_numpy(data["X_val"]), torch.from_numpy(data["y_val"]).long()
    model = _mlp(Xtr.shape[1], hidden, int(data["n_classes"]))
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"], betas=(1 - config["one_minus_beta1"], 0.999))
    start = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / "state.pt", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = int(state["epoch"])
    for group in opt.param_groups:  # the explored values, after the copied state
        group["lr"], group["betas"] = config["lr"], (1 - config["one_minus_beta1"], 0.999)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(start, epochs):
        model.train()
        for idx in torch.randperm(len(ytr)).split(BATCH):
            if len(idx) < 2:  # batch norm needs two samples
                continue
            opt.zero_grad()
            loss_fn(model(Xtr[idx]), ytr[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = float((model(Xva).argmax(1) == yva).float().mean())
        metrics = {"val_accuracy": acc, "epoch": epoch + 1}
        if (epoch + 1) % interval == 0:
            with tempfile.TemporaryDirectory() as d:
                torch.save(
                    {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1}, Path(d) / "state.pt"
                )
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        else:
            tune.report(metrics)


def ray_pbt(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    from caviar.tune.planning import load_data
    from caviar.tune.spec import load_spec

    prepared = load_data(load_spec(spec_for(args, "sqlite:///:memory:")))
    data = {
        "X_train": np.ascontiguousarray(prepared.X_train, dtype=np.float32),
        "y_train": np.asarray(prepared.y_train),
        "X_val": np.ascontiguousarray(prepared.X_val, dtype=np.float32),
        "y_val": np.asarray(prepared.y_val),
        "n_classes": np.asarray(prepared.n_classes),
    }
    t0 = time.perf_counter()
    ray.init(
        address="local",
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        num_cpus=args.cpus,
        log_to_driver=False,
        configure_logging=False,
    )
    init = time.perf_counter() - t0
    space = {"lr": tune.loguniform(1e-4, 3e-2), "one_minus_beta1": tune.loguniform(0.01, 0.2)}  # beta1 in [0.8, 0.99]
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=args.interval,
        hyperparam_mutations=space,
        quantile_fraction=QUANTILE,
        perturbation_factors=FACTORS,
        resample_probability=RESAMPLE,
    )
    reach: dict[str, Any] = {"reached": None, "epoch": None, "best": -np.inf, "results": 0}

    class FirstReach(tune.Stopper):
        """Stops every trial once one reaches the target (recording when)."""

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            reach["results"] += 1
            acc = float(result.get("val_accuracy", -np.inf))
            reach["best"] = max(reach["best"], acc)
            if reach["reached"] is None and acc >= args.target:
                reach["reached"], reach["epoch"] = time.perf_counter() - start, result.get("epoch")
            return result.get("epoch", 0) >= args.epochs

        def stop_all(self) -> bool:
            return reach["reached"] is not None

    trainable = tune.with_resources(
        tune.with_parameters(ray_trainable, data=data, hidden=args.hidden, epochs=args.epochs, interval=args.interval),
        {"cpu": 1},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_accuracy",
            mode="max",
            scheduler=scheduler,
            num_samples=args.population,
            reuse_actors=True,  # as Ray's PBT warning advises its users (the default is False in Ray 2.x)
        ),
        run_config=tune.RunConfig(name="ray-pbt", storage_path=str(folder / "ray"), stop=FirstReach(), verbose=0),
    )
    try:
        start = time.perf_counter()
        tuner.fit()
        total = time.perf_counter() - start
    finally:
        ray.shutdown()
    return {**reach, "total": total, "init": init}


# -------------------------------------------------------------------------------------------- main
def _seconds(x: float | None) -> str:
    return "not reached" if x is None else f"{x:.1f} s"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    _limit = set_threads(args.cpus)  # noqa: F841 (kept alive: caviar's slices, one per core)
    print(machine_state())
    print(describe_blas())
    print(torch_threads())
    print(
        f"settings: {args.dataset}, target val_accuracy {args.target}, population {args.population}, up to "
        f"{args.epochs} epochs, perturbation interval {args.interval}, hidden {args.hidden}, batch {BATCH}, "
        f"quantile {QUANTILE}, factors {FACTORS}, resample {RESAMPLE}, {args.cpus} cores"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cav = caviar_pbt(args, folder)
        print(
            f"caviar PBT: target {_seconds(cav['reached'])} (epoch {cav['epoch']}), best val_accuracy "
            f"{cav['best']:.4f}, {cav['copies']} copies, whole run {cav['total']:.1f} s "
            f"(warm-up study {cav['warm']:.1f} s, not counted)"
        )
        ray_side = ray_pbt(args, folder)
        print(
            f"Ray Tune PBT: target {_seconds(ray_side['reached'])} (epoch {ray_side['epoch']}), best val_accuracy "
            f"{ray_side['best']:.4f}, {ray_side['results']} results, Tuner.fit {ray_side['total']:.1f} s "
            f"(ray.init {ray_side['init']:.1f} s, not counted)"
        )
    if cav["reached"] is not None and ray_side["reached"] is not None:
        print(f"ratio: Ray / caviar time to val_accuracy {args.target}: {ray_side['reached'] / cav['reached']:.2f}x")
    else:
        print(f"ratio: n/a (a side did not reach val_accuracy {args.target} within {args.epochs} epochs)")
    print(machine_state())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
