"""Mixed shapes in one stacked computation: how the packer splits a mixed-space study, and what it costs.

The issue's mixed space (hidden from {64, 128, 128-64, 256-128}, batch size from {32, 64, 128},
dropout, plus the fixed space's learning rate, betas and L2) on digits: the 64 trials of round 0 of
a random search, packed without padding (one static shape per population) and with it (widths
padded where the cost model allows, caviar.tune.population.DEFAULT_PAD_BOUND). Printed: the number
and sizes of populations both ways, and the padded matmul work over the members' own.

``--train`` also trains every population both ways, back to back (``--repeats`` interleaved
times), and checks that each trial ends bit for bit the same either way: wall time of the training
only (no storage), which on a loaded machine is noisy; the counted work is the stable figure.

    python benchmarks/packing.py                  # packing only (instant)
    python benchmarks/packing.py --train --epochs 5 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tune import study_spec  # noqa: E402

from caviar.tune.planning import load_data, plans_for, resolve_spec  # noqa: E402
from caviar.tune.population import TrialPlan, macs, pack  # noqa: E402
from caviar.tune.runner import train_population  # noqa: E402


def round_zero(trials: int, epochs: int, seed: int) -> tuple[Any, list[TrialPlan]]:
    """The mixed-space study's spec and its round-0 trial plans (a random search: all trials)."""
    spec = resolve_spec(study_spec("digits", "random", trials, epochs, seed, Path("unused.db"), space="mixed"))
    numbers = list(range(trials))
    return spec, plans_for(spec, numbers, spec.sampler().propose(numbers, []), 0)


def describe(populations: list[list[TrialPlan]], n_in: int, n_out: int) -> dict[str, Any]:
    """Population count and sizes, and matmul work per sample-step: padded over the members' own."""
    own = padded = 0
    for members in populations:
        widest = tuple(max(ws) for ws in zip(*(p.model.hidden for p in members), strict=True))
        own += sum(macs(n_in, n_out, p.model.hidden) for p in members)
        padded += len(members) * macs(n_in, n_out, widest)
    sizes = sorted((len(m) for m in populations), reverse=True)
    return {"populations": len(populations), "sizes": sizes, "work_ratio": padded / own}


def train_all(populations: list[list[TrialPlan]], data: Any, seed: int) -> tuple[float, dict[int, Any]]:
    """Train every population; (seconds, outcome by trial number)."""
    start = time.perf_counter()
    outcomes = {}
    for members in populations:
        for p, o in zip(members, train_population(members, data, seed=seed), strict=True):
            outcomes[p.number] = o
    return time.perf_counter() - start, outcomes


def same(a: Any, b: Any) -> bool:
    return (
        a.state == b.state
        and a.curve == b.curve
        and a.metrics == b.metrics
        and all(np.array_equal(a.params[n], b.params[n]) for n in a.params)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", action="store_true", help="train both packings and compare (slow)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    spec, plans = round_zero(args.trials, args.epochs, args.seed)
    data = load_data(spec)
    n_in, n_out = data.n_features, data.n_classes
    cap = spec.search.population_cap
    packings = {"by shape": pack(plans, n_in, n_out, cap, pad_bound=None), "padded": pack(plans, n_in, n_out, cap)}
    print(f"mixed space, digits, {args.trials} trials (round 0 of a random search), max_population {cap}")
    for name, populations in packings.items():
        d = describe(populations, n_in, n_out)
        print(f"  {name:9s} {d['populations']:3d} populations, sizes {d['sizes']}, work ratio {d['work_ratio']:.3f}")
    if not args.train:
        return
    times: dict[str, list[float]] = {name: [] for name in packings}
    results: dict[str, dict[int, Any]] = {}
    for _ in range(args.repeats):
        for name, populations in packings.items():
            seconds, results[name] = train_all(populations, data, spec.search.seed or 0)
            times[name].append(seconds)
    for name, ts in times.items():
        runs = ", ".join(f"{t:.2f}" for t in ts)
        print(f"  train {name:9s} median {np.median(ts):.2f} s over {len(ts)} (all: {runs})")
    equal = all(same(results["padded"][n], results["by shape"][n]) for n in results["padded"])
    print(f"  every trial bit for bit the same both ways: {equal}")


if __name__ == "__main__":
    main()
