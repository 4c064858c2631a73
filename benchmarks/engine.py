"""Engine benchmark: a caviar population of K networks against PyTorch, on equal threads.

    python benchmarks/engine.py                 # digits and MNIST-sized, K = 32
    python benchmarks/engine.py --quick         # a short smoke run
    python benchmarks/engine.py --data-dir /work/shared/data/mnist --threads 2 --K 32 --steps 20

For each data set (digits: 64-128-64-10, batch 64; MNIST-sized: 784-128-64-10, batch 256), float32,
batch norm + ReLU + Adam, it times training steps on fixed pre-drawn batches, interleaving the
contestants and reporting medians:

- caviar K-population vs K sequential PyTorch trainings (nn.Sequential, torch.optim.Adam);
- caviar K-population vs a torch.func ensemble (stack_module_state + functional_call + vmap(grad),
  Adam on the stacked parameters, batch norm in train mode through the buffers);
- caviar K = 1 vs one PyTorch nn.Sequential;
- the population's achieved GFLOP/s (forward + backward = 3 x the forward matmul flops) as a
  fraction of a large float32 numpy matmul on the same threads;
- and whole ``Trainer.fit`` epochs of the K-population.

Throughput is model-samples per second: members x batch x steps / seconds.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# OpenMP threads (torch's) that spin while idle steal the core BLAS or another process needs: on a
# shared or small machine that slows torch many-fold. Sleeping idle threads keeps the anchor fair.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe_blas, interleaved, matmul_gflops, set_threads, table, timed  # noqa: E402

from caviar.config import TrainConfig  # noqa: E402
from caviar.nn.network import Architecture  # noqa: E402
from caviar.train.trainer import Trainer, hyperparameters_from  # noqa: E402

HIDDEN = (128, 64)
LR = 1e-3

#: The issue's targets: (what, minimum ratio caviar / anchor) per data set.
TARGETS = {
    "digits": {"seq": 10.0, "func": 2.0, "single": 2.0},
    "mnist": {"seq": 3.0, "func": 2.0, "single": 1.3, "peak": 0.5},
}


@dataclass
class Case:
    """A data set to train on: features (float32, standardized), labels, batch size."""

    name: str
    X: np.ndarray
    y: np.ndarray
    batch: int

    @property
    def n_in(self) -> int:
        return self.X.shape[1]


def load_cases(data_dir: str | None, n_random: int) -> list[Case]:
    """digits (sklearn's load_digits) and MNIST-sized data (real MNIST from ``data_dir``, else random)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    cases = [Case("digits", _standardized(d.data), d.target.astype(np.int64), 64)]
    if data_dir:
        from caviar.data.datasets import load_dataset

        train = load_dataset("mnist", data_dir).train
        X, y = train.X.reshape(len(train.X), -1), train.y
        cases.append(Case("mnist", _standardized(X), y, 256))
    else:
        rng = np.random.default_rng(0)
        cases.append(
            Case("mnist", rng.standard_normal((n_random, 784)).astype(np.float32), rng.integers(0, 10, n_random), 256)
        )
    return cases


def _standardized(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return ((X - X.mean(0)) / (X.std(0) + 1e-8)).astype(np.float32)


def batches(case: Case, steps: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``steps`` fixed mini-batches, drawn once, shared by every contestant."""
    rng = np.random.default_rng(seed)
    idx = [rng.choice(len(case.y), case.batch, replace=False) for _ in range(steps)]
    return [(np.ascontiguousarray(case.X[i]), case.y[i]) for i in idx]


# ----- caviar ------------------------------------------------------------------------------------
def caviar_trainer(case: Case, K: int, epochs: int = 1) -> Trainer:
    arch = Architecture(case.n_in, 10, HIDDEN, "relu", True)
    cfg = TrainConfig(optimizer="adam", learning_rate=LR, batch_size=case.batch, epochs=epochs)
    return Trainer(arch, cfg, hyperparameters_from([{}] * K, cfg), list(range(K)), seed=0, dtype=np.float32)


def caviar_steps(trainer: Trainer, data: list) -> Callable[[], None]:
    def run() -> None:
        for xb, yb in data:
            trainer.train_step(xb, yb)

    return run


def caviar_fit(case: Case, K: int, epochs: int) -> Callable[[], float]:
    """Seconds of ``Trainer.fit`` for ``epochs`` epochs over the whole data set (set-up excluded)."""

    def run() -> float:
        trainer = caviar_trainer(case, K, epochs)
        start = time.perf_counter()
        trainer.fit(case.X, case.y)
        return time.perf_counter() - start

    return run


# ----- PyTorch -----------------------------------------------------------------------------------
def torch_model(n_in: int):
    import torch.nn as nn

    return nn.Sequential(
        nn.Linear(n_in, HIDDEN[0], bias=False),
        nn.BatchNorm1d(HIDDEN[0]),
        nn.ReLU(),
        nn.Linear(HIDDEN[0], HIDDEN[1], bias=False),
        nn.BatchNorm1d(HIDDEN[1]),
        nn.ReLU(),
        nn.Linear(HIDDEN[1], 10),
    )


def torch_data(data: list) -> list:
    import torch

    return [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in data]


def torch_sequential(n_in: int, K: int, tdata: list) -> Callable[[], None]:
    """K PyTorch trainings one after the other, each over every batch."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    models = [torch_model(n_in) for _ in range(K)]
    opts = [torch.optim.Adam(m.parameters(), lr=LR) for m in models]

    def run() -> None:
        for model, opt in zip(models, opts, strict=True):
            for xb, yb in tdata:
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(xb), yb).backward()
                opt.step()

    return run


def torch_func_ensemble(n_in: int, K: int, tdata: list) -> Callable[[], None]:
    """K models as one vmapped functional model: stacked parameters, vmap(grad), Adam on the stack."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad, stack_module_state, vmap

    torch.manual_seed(0)
    models = [torch_model(n_in) for _ in range(K)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def loss(p: dict, b: dict, x, y):
        return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    grads_of = vmap(grad(loss), in_dims=(0, 0, None, None))
    leaves = list(params.values())
    opt = torch.optim.Adam(leaves, lr=LR)

    def run() -> None:
        for xb, yb in tdata:
            g = grads_of(params, buffers, xb, yb)
            for name, p in params.items():
                p.grad = g[name]
            opt.step()

    return run


# ----- the run -----------------------------------------------------------------------------------
def bench_case(case: Case, K: int, steps: int, repeats: int, fit_epochs: int, seq_models: int) -> dict:
    data = batches(case, steps)
    tdata = torch_data(data)
    pop, single = caviar_trainer(case, K), caviar_trainer(case, 1)
    contestants = {
        "caviar K": timed(caviar_steps(pop, data)),
        "torch seq": timed(torch_sequential(case.n_in, seq_models, tdata)),
        "torch.func": timed(torch_func_ensemble(case.n_in, K, tdata)),
        "caviar 1": timed(caviar_steps(single, data)),
        "torch 1": timed(torch_sequential(case.n_in, 1, tdata)),
    }
    for fn in contestants.values():  # warm up (allocations, thread pools, torch's first calls)
        fn()
    t = interleaved(contestants, repeats)
    samples = case.batch * steps
    rate = {
        "caviar K": K * samples / t["caviar K"],
        "torch seq": seq_models * samples / t["torch seq"],
        "torch.func": K * samples / t["torch.func"],
        "caviar 1": samples / t["caviar 1"],
        "torch 1": samples / t["torch 1"],
    }
    arch = Architecture(case.n_in, 10, HIDDEN)
    gflops = 3 * arch.flops_per_sample() * rate["caviar K"] / 1e9
    fit_rate = None
    if fit_epochs:
        fit_s = float(np.median([caviar_fit(case, K, fit_epochs)() for _ in range(max(1, repeats // 2))]))
        fit_rate = K * len(case.y) * fit_epochs / fit_s
    return {"rate": rate, "gflops": gflops, "fit_rate": fit_rate}


def _ratio_row(name: str, what: str, r: dict, mine: str, anchor: str, goal: float | None) -> list[object]:
    ratio = r[mine] / r[anchor]
    verdict = "" if goal is None else (f">= {goal:g}x " + ("met" if ratio >= goal else "MISSED"))
    return [name, what, f"{r[mine]:,.0f}", f"{r[anchor]:,.0f}", f"{ratio:.2f}x", verdict]


def report(cases: list[Case], results: dict[str, dict], K: int, peak: float) -> str:
    """The table of figures and ratios against the targets."""
    rows = []
    for case in cases:
        res, target, name = results[case.name], TARGETS[case.name], case.name
        r = res["rate"]
        rows.append(
            _ratio_row(name, f"K={K} population vs {K} sequential torch", r, "caviar K", "torch seq", target.get("seq"))
        )
        rows.append(
            _ratio_row(
                name, f"K={K} population vs torch.func ensemble", r, "caviar K", "torch.func", target.get("func")
            )
        )
        rows.append(_ratio_row(name, "K=1 vs torch nn.Sequential", r, "caviar 1", "torch 1", target.get("single")))
        frac, goal = res["gflops"] / peak, target.get("peak")
        verdict = "" if goal is None else (f">= {goal:g} " + ("met" if frac >= goal else "MISSED"))
        rows.append(
            [name, f"K={K} GFLOP/s vs numpy matmul", f"{res['gflops']:.1f}", f"{peak:.1f}", f"{frac:.2f}", verdict]
        )
        if res["fit_rate"] is not None:
            rows.append([name, f"K={K} Trainer.fit epochs", f"{res['fit_rate']:,.0f}", "", "", ""])
    head = ["data", "measure", "caviar (model-samples/s)", "anchor", "ratio", "target"]
    return table(head, rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short smoke run (few steps and repeats)")
    ap.add_argument("--K", type=int, default=32, help="population size (default 32)")
    ap.add_argument("--steps", type=int, default=None, help="training steps per timed run (default 20; quick 3)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 5; quick 2)")
    ap.add_argument("--epochs", type=int, default=None, help="Trainer.fit epochs timed (default 1; 0 skips)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for BLAS, OpenMP and torch")
    ap.add_argument("--data-dir", default=None, help="a folder with the MNIST idx files (else random data)")
    ap.add_argument("--cases", default="digits,mnist", help="comma-separated: digits, mnist")
    ap.add_argument(
        "--seq-models",
        type=int,
        default=None,
        help="sequential torch trainings actually timed (rate per model is the same; default K)",
    )
    args = ap.parse_args(argv)
    steps = args.steps or (3 if args.quick else 20)
    repeats = args.repeats or (2 if args.quick else 5)
    epochs = args.epochs if args.epochs is not None else (0 if args.quick else 1)
    seq_models = args.seq_models or (min(4, args.K) if args.quick else args.K)

    import torch  # noqa: F401  (loaded before the limits so that its OpenMP pool is limited too)

    limiter = set_threads(args.threads)
    peak = matmul_gflops()
    cases = [c for c in load_cases(args.data_dir, 6_000 if args.quick else 12_000) if c.name in args.cases.split(",")]
    print(
        f"caviar engine benchmark: K={args.K}, {steps} steps x {repeats} interleaved repeats, "
        f"{args.threads} threads, float32, BN + ReLU + Adam"
    )
    print(f"machine: {os.cpu_count()} cores; numpy float32 2048^3 matmul: {peak:.1f} GFLOP/s")
    print(describe_blas())
    results = {}
    for case in cases:
        results[case.name] = bench_case(case, args.K, steps, repeats, epochs, seq_models)
        r = results[case.name]["rate"]
        print(f"  {case.name}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in r.items()), flush=True)
    print()
    print(report(cases, results, args.K, peak))
    del limiter


if __name__ == "__main__":
    main()
