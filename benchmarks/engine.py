"""Engine benchmark: a caviar population of K networks against JAX, PyTorch and torch.func, on equal threads.

    python benchmarks/engine.py                      # digits and MNIST-sized, K = 32 and 128, 3 repeats
    python benchmarks/engine.py --K 32 --cases mnist --data-dir ../shared/data/mnist
    python benchmarks/engine.py --smoke              # the test suite's tiny run (K = 2, 2 steps)

For each data set (digits: 64-128-64-10, batch 64; MNIST-sized: 784-128-64-10, batch 256), float32,
batch norm (training mode, batch statistics) + ReLU + softmax cross-entropy + Adam, it times training
steps on fixed pre-drawn batches, interleaving the contestants (a, b, c, a, b, c...) and reporting the
median and the min-max over the repeats, at each population size K:

- JAX: ``jax.vmap`` of ``jax.grad`` over the stacked parameters of K members, optax Adam on the stack,
  (i) one ``jax.jit`` call per step and (ii) ``jax.lax.scan`` over the steps inside one jitted call;
  buffers donated; lowering + compilation excluded from the timed part and reported;
- a torch.func ensemble (stack_module_state + functional_call + vmap(grad), Adam on the stack);
- K sequential PyTorch trainings (nn.Sequential, torch.optim.Adam; min(K, 32) of them timed, the rate
  per model is the same);
- caviar K = 1 vs one PyTorch nn.Sequential (at the first K);
- each contestant's GFLOP/s with the real matmul flop count (forward, weight gradients, input
  gradients but the first layer's) as a fraction of the machine's float32 matmul rate, measured at the
  start by numpy GEMMs of the case's layer shapes (benchmarks/_common.py: matmul_rate);
- and whole ``Trainer.fit`` epochs of the first K.

Throughput is model-samples per second: members x batch x steps / seconds. The strongest anchor (the
fastest) comes first in every table and in the summary.
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
from typing import Any

# OpenMP threads (torch's) that spin while idle steal the core BLAS or another process needs: on a
# shared or small machine that slows torch many-fold. Sleeping idle threads keeps the anchor fair.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    describe_blas,
    interleaved_runs,
    jax_threads,
    machine_state,
    matmul_rate,
    mlp_flops,
    mlp_gemm_shapes,
    set_threads,
    spread,
    step_bound,
    table,
    timed,
    torch_threads,
)

from caviar.config import TrainConfig  # noqa: E402
from caviar.nn.network import Architecture  # noqa: E402
from caviar.train.trainer import Trainer, hyperparameters_from  # noqa: E402

HIDDEN = (128, 64)
LR = 1e-3
#: Real MNIST: the repository's sibling folder shared/data/mnist (see its README), resolved from here.
MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

#: The issues' targets: minimum ratio caviar / anchor per data set (issue 9: against JAX's lax.scan).
TARGETS = {
    "digits": {"jax scan": 1.5, "torch seq": 10.0, "torch.func": 2.0, "single": 2.0},
    "mnist": {"jax scan": 1.1, "torch seq": 3.0, "torch.func": 2.0, "single": 1.3},
}


@dataclass
class Case:
    """A data set to train on: features (float32, standardized), labels, batch size, where they came from."""

    name: str
    X: np.ndarray
    y: np.ndarray
    batch: int
    source: str = ""

    @property
    def n_in(self) -> int:
        return self.X.shape[1]


def load_cases(data_dir: Path | None, n_random: int) -> list[Case]:
    """digits (sklearn's load_digits) and MNIST-sized data (real MNIST from ``data_dir`` if it is there,
    else random: the steps' speed does not depend on the pixels)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    cases = [Case("digits", _standardized(d.data), d.target.astype(np.int64), 64, "sklearn digits")]
    if data_dir is not None and Path(data_dir).is_dir():
        from caviar.data.datasets import load_dataset

        train = load_dataset("mnist", str(data_dir)).train
        X, y = train.X.reshape(len(train.X), -1)[:n_random], train.y[:n_random]
        cases.append(Case("mnist", _standardized(X), y.astype(np.int64), 256, f"real MNIST, {len(y)} images"))
    else:
        rng = np.random.default_rng(0)
        X, y = rng.standard_normal((n_random, 784)).astype(np.float32), rng.integers(0, 10, n_random)
        cases.append(Case("mnist", X, y, 256, f"random data ({data_dir} not found)"))
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


def phase_profile(case: Case, K: int, cores: int, steps: int = 20) -> tuple[float, list[tuple[str, float]]]:
    """Where one slice's step goes: the K / cores members one core trains, on one BLAS thread.

    Returns the step's seconds (the median of 5 runs of ``steps`` steps) and (phase, seconds) for each
    matmul, each fused kernel, the softmax and Adam, timed alone on the trainer's own arrays (the
    median of 5 runs of 20 calls), the remainder (Python, dispatch, the small copies) last."""
    from threadpoolctl import threadpool_limits

    from caviar.nn import kernels

    members = max(1, K // cores)
    data = batches(case, steps)
    n_layers = len(HIDDEN) + 1

    def clock(fn: Callable[[], object], calls: int = 20) -> float:
        fn()
        ts = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            ts.append((time.perf_counter() - start) / calls)
        return float(np.median(ts))

    with threadpool_limits(limits=1, user_api="blas"):
        trainer = caviar_trainer(case, members)
        trainer.threads = 1
        run = caviar_steps(trainer, data)
        step = clock(run, 1) / steps
        p, st = trainer.params, trainer.state
        xb, yb = data[0]
        m = np.full(members, 0.1)
        phases: list[tuple[str, float]] = []
        a, acts, caches = xb, [], []
        for i in range(n_layers):  # forward: the matmul, then batch norm + ReLU (one kernel)
            name = f"dense{i}" if i < n_layers - 1 else "out"
            W = p[f"{name}.W"]
            phases.append((f"forward matmul {name} ({a.shape[-2]}x{W.shape[1]}x{W.shape[2]})",
                           clock(lambda a=a, W=W: np.matmul(a, W))))  # fmt: skip
            z = np.matmul(a, W)
            acts.append(a)
            if i == n_layers - 1:
                break
            bn = (
                p[f"bn{i}.gamma"],
                p[f"bn{i}.beta"],
                1e-5,
                "relu",
                st[f"bn{i}.running_mean"],
                st[f"bn{i}.running_var"],
            )

            def bn_forward(z: np.ndarray = z, bn: tuple = bn) -> tuple:
                return kernels.batchnorm_activation_forward_(z.copy(), *bn, m)

            phases.append((f"batch norm + ReLU forward {i} (kernel)", clock(bn_forward)))
            a, cache, _, _ = kernels.batchnorm_activation_forward_(z.copy(), *bn, m)
            caches.append((a, cache))
        logits = z + p["out.b"]
        phases.append(
            ("softmax cross-entropy (kernel)", clock(lambda: kernels.softmax_cross_entropy_(logits.copy(), yb)))
        )
        da = kernels.softmax_cross_entropy_(logits.copy(), yb)[2]
        for i in reversed(range(n_layers)):  # backward: weight gradient, input gradient, the kernel below
            name = f"dense{i}" if i < n_layers - 1 else "out"
            W, a_in = p[f"{name}.W"], acts[i]
            at = a_in.T if a_in.ndim == 2 else a_in.transpose(0, 2, 1)
            phases.append((f"weight-gradient matmul {name}", clock(lambda at=at, da=da: np.matmul(at, da))))
            if i == 0:
                break
            Wt = W.transpose(0, 2, 1)
            phases.append((f"input-gradient matmul {name}", clock(lambda da=da, Wt=Wt: np.matmul(da, Wt))))
            da = np.matmul(da, Wt)
            h, cache = caches[i - 1]

            def bn_backward(da: np.ndarray = da, h: np.ndarray = h, c: tuple = cache) -> tuple:
                return kernels.batchnorm_activation_backward_(da.copy(), h, c, "relu")

            phases.append((f"batch norm + ReLU backward {i - 1} (kernel)", clock(bn_backward)))
        views = trainer._slice_views(0, members)  # the optimizer's fused plan over the slice, as a step uses it
        coef = trainer.optimizer.coefficient_table(trainer.lr, trainer.hp, 2, trainer.hp["l2"], trainer.dtype)
        phases.append(("Adam over every parameter (kernel)",
                       clock(lambda: trainer.optimizer.apply_plan(views.plan, coef, 2, l2=False))))  # fmt: skip
    phases.append(("the rest (Python, dispatch, small copies)", step - sum(t for _, t in phases)))
    return step, phases


def print_profile(case: Case, K: int, cores: int) -> None:
    """``phase_profile`` as a table: each phase's share of a slice's step."""
    step, phases = phase_profile(case, K, cores)
    members = max(1, K // cores)
    print(f"\nprofile: {case.name} K={K}, one slice of {members} members on one thread (what each of {cores} "
          f"cores runs), step {step * 1e3:.2f} ms")  # fmt: skip
    rows = [[name, f"{t * 1e3:.3f}", f"{t / step:.3f}"] for name, t in phases]
    matmul = sum(t for name, t in phases if "matmul" in name)
    rows.append(["all matmuls", f"{matmul * 1e3:.3f}", f"{matmul / step:.3f}"])
    print(table(["phase", "ms", "of the step"], rows))


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


# ----- JAX ---------------------------------------------------------------------------------------
def jax_ensemble(n_in: int, K: int, data: list, form: str) -> tuple[Callable[[], None], float]:
    """K models as one vmapped JAX function over stacked parameters, optax Adam on the stack.

    Each member: (Linear without bias, batch norm in training mode with the batch's statistics and
    running statistics updated as caviar and torch do, ReLU) x 2, then Linear, softmax cross-entropy.
    ``form`` "step": one ``jax.jit`` call per step (buffers donated); "scan": ``jax.lax.scan`` over the
    steps inside one jitted call (the whole epoch's batches stacked on the device). Returns the timed
    run and the seconds that lowering and compiling took (excluded from the run).
    """
    import jax
    import jax.numpy as jnp
    import optax

    widths = (n_in, *HIDDEN, 10)
    keys = jax.random.split(jax.random.PRNGKey(0), len(widths))
    params, state = {}, {}
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=False), start=1):
        params[f"W{i}"] = jax.random.normal(keys[i], (K, a, b), jnp.float32) * np.sqrt(2.0 / a)
        if i < len(widths) - 1:
            params[f"g{i}"], params[f"b{i}"] = jnp.ones((K, b)), jnp.zeros((K, b))
            state[f"m{i}"], state[f"v{i}"] = jnp.zeros((K, b)), jnp.ones((K, b))
        else:
            params[f"b{i}"] = jnp.zeros((K, b))
    n_layers = len(widths) - 1

    def member_loss(p: dict, s: dict, x: Any, y: Any) -> tuple[Any, dict]:
        h, new = x, {}
        for i in range(1, n_layers):
            z = h @ p[f"W{i}"]
            mu, var = z.mean(0), z.var(0)
            h = jax.nn.relu((z - mu) * jax.lax.rsqrt(var + 1e-5) * p[f"g{i}"] + p[f"b{i}"])
            n = z.shape[0]
            new[f"m{i}"] = 0.9 * s[f"m{i}"] + 0.1 * mu
            new[f"v{i}"] = 0.9 * s[f"v{i}"] + 0.1 * var * (n / (n - 1))
        logits = h @ p[f"W{n_layers}"] + p[f"b{n_layers}"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new

    grads = jax.vmap(jax.grad(member_loss, has_aux=True), in_axes=(0, 0, None, None))
    opt = optax.adam(LR)

    def step(carry: tuple, xy: tuple) -> tuple[tuple, None]:
        p, s, o = carry
        g, s = grads(p, s, *xy)
        updates, o = opt.update(g, o, p)
        return (optax.apply_updates(p, updates), s, o), None

    carry = [(params, state, opt.init(params))]
    xs = [jnp.asarray(x) for x, _ in data]
    ys = [jnp.asarray(y.astype(np.int32)) for _, y in data]
    start = time.perf_counter()
    if form == "step":
        fn = jax.jit(lambda c, x, y: step(c, (x, y))[0], donate_argnums=0)
        compiled = fn.lower(carry[0], xs[0], ys[0]).compile()
    else:
        X, Y = jnp.stack(xs), jnp.stack(ys)
        fn = jax.jit(lambda c, X, Y: jax.lax.scan(step, c, (X, Y))[0], donate_argnums=0)
        compiled = fn.lower(carry[0], X, Y).compile()
    compile_s = time.perf_counter() - start

    def run() -> None:
        c = carry[0]
        if form == "step":
            for x, y in zip(xs, ys, strict=True):
                c = compiled(c, x, y)
        else:
            c = compiled(c, X, Y)
        jax.block_until_ready(c)
        carry[0] = c

    return run, compile_s


# ----- the run -----------------------------------------------------------------------------------
ANCHORS = {
    "jax scan": "JAX jit(vmap) + lax.scan over the steps",
    "jax step": "JAX jit(vmap), one call per step",
    "torch.func": "torch.func ensemble (vmap(grad))",
    "torch seq": "sequential torch trainings",
}


def bench_case(case: Case, K: int, steps: int, repeats: int, seq_models: int, with_single: bool) -> dict:
    """Model-samples per second of each contestant at population size K (interleaved medians and
    ranges), and the JAX forms' compile seconds."""
    data = batches(case, steps)
    tdata = torch_data(data)
    jax_step, compile_step = jax_ensemble(case.n_in, K, data, "step")
    jax_scan, compile_scan = jax_ensemble(case.n_in, K, data, "scan")
    members = {"caviar K": K, "jax scan": K, "jax step": K, "torch.func": K, "torch seq": seq_models}
    contestants = {
        "caviar K": timed(caviar_steps(caviar_trainer(case, K), data)),
        "jax scan": timed(jax_scan),
        "jax step": timed(jax_step),
        "torch.func": timed(torch_func_ensemble(case.n_in, K, tdata)),
        "torch seq": timed(torch_sequential(case.n_in, seq_models, tdata)),
    }
    if with_single:
        members.update({"caviar 1": 1, "torch 1": 1})
        contestants["caviar 1"] = timed(caviar_steps(caviar_trainer(case, 1), data))
        contestants["torch 1"] = timed(torch_sequential(case.n_in, 1, tdata))
    for fn in contestants.values():  # warm up (allocations, thread pools, torch's first calls)
        fn()
    runs = interleaved_runs(contestants, repeats)
    samples = case.batch * steps
    rates = {k: [members[k] * samples / t for t in ts] for k, ts in runs.items()}
    return {"rates": rates, "compile": {"jax step": compile_step, "jax scan": compile_scan}}


def _med(values: list[float]) -> float:
    return float(np.median(values))


def report(cases: list[Case], results: dict, Ks: list[int], peaks: dict[str, float]) -> tuple[str, list[str]]:
    """The ratio table (strongest anchor first), the matmul-rate table, and the summary lines."""
    ratio_rows, rate_rows, summary = [], [], []
    for case in cases:
        forward, train = mlp_flops((case.n_in, *HIDDEN, 10))
        for K in Ks:
            res = results[(case.name, K)]
            r = res["rates"]
            anchors = sorted(ANCHORS, key=lambda a: -_med(r[a]))
            for i, a in enumerate(anchors):
                ratio = _med(r["caviar K"]) / _med(r[a])
                goal = TARGETS[case.name].get(a)
                verdict = "" if goal is None else f">= {goal:g}x " + ("met" if ratio >= goal else "MISSED")
                per = spread([c / x for c, x in zip(r["caviar K"], r[a], strict=True)])
                strongest = " [strongest]" if i == 0 else ""
                ratio_rows.append(
                    [case.name, f"K={K} population vs {ANCHORS[a]}{strongest}", f"{_med(r['caviar K']):,.0f}",
                     f"{_med(r[a]):,.0f}", f"{ratio:.2f}x", per, verdict]
                )  # fmt: skip
                if i == 0 or a == "jax scan":
                    role = "the strongest anchor" if i == 0 else "the issue's named anchor"
                    summary.append(
                        f"{case.name} K={K}: caviar / {ANCHORS[a]} ({role}) = {ratio:.2f}x {verdict}".strip()
                    )
            if "caviar 1" in r:
                ratio = _med(r["caviar 1"]) / _med(r["torch 1"])
                per = spread([c / x for c, x in zip(r["caviar 1"], r["torch 1"], strict=True)])
                goal = TARGETS[case.name].get("single")
                verdict = "" if goal is None else f">= {goal:g}x " + ("met" if ratio >= goal else "MISSED")
                ratio_rows.append(
                    [case.name, "K=1 vs torch nn.Sequential", f"{_med(r['caviar 1']):,.0f}",
                     f"{_med(r['torch 1']):,.0f}", f"{ratio:.2f}x", per, verdict]
                )  # fmt: skip
            for name in ("caviar K", *anchors):
                gflops = [x * train / 1e9 for x in r[name]]
                label = "caviar" if name == "caviar K" else ANCHORS[name]
                compile_s = res["compile"].get(name)
                rate_rows.append(
                    [case.name, f"K={K} {label}", f"{_med(r[name]):,.0f}", spread(gflops, "{:.1f}"),
                     spread([g / peaks[case.name] for g in gflops], "{:.3f}"),
                     "" if compile_s is None else f"{compile_s:.2f} s"]
                )  # fmt: skip
    head = ["data", "measure", "caviar (model-samples/s)", "anchor", "ratio", "per repeat", "target"]
    head2 = ["data", "contestant", "model-samples/s", "GFLOP/s (real count)", "of the matmul rate", "compile"]
    return table(head, ratio_rows) + "\n\n" + table(head2, rate_rows), summary


def bound_lines(cases: list[Case], results: dict, Ks: list[int], peaks: dict[str, float]) -> list[str]:
    """Per case and K: the measured bound (``step_bound``) in model-samples/s and as a fraction of the
    matmul rate, the share of it caviar reaches, and the share the JAX-scan target asks for."""
    lines = []
    for case in cases:
        train = mlp_flops((case.n_in, *HIDDEN, 10))[1]
        for K in Ks:
            res = results[(case.name, K)]
            bound, made_of = res["bound"]
            caviar, jax = _med(res["rates"]["caviar K"]), _med(res["rates"]["jax scan"])
            need = TARGETS[case.name]["jax scan"] * jax
            lines.append(
                f"bound {case.name} K={K}: {made_of} -> {bound:,.0f} model-samples/s "
                f"({bound * train / 1e9 / peaks[case.name]:.3f} of the matmul rate); caviar {caviar:,.0f} = "
                f"{caviar / bound:.2f} of the bound; the target {TARGETS[case.name]['jax scan']:g}x JAX scan = "
                f"{need:,.0f} = {need / bound:.2f} of the bound"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="a tiny run for the tests (K = 2, 2 steps, 1 repeat)")
    ap.add_argument("--K", default=None, help="population sizes, comma-separated (default 32,128; smoke 2)")
    ap.add_argument("--steps", type=int, default=None, help="training steps per timed run (default 20)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3)")
    ap.add_argument("--epochs", type=int, default=None, help="Trainer.fit epochs timed at the first K (default 1)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for BLAS, OpenMP and torch")
    ap.add_argument("--data-dir", type=Path, default=MNIST_DIR, help="MNIST's idx files (default: %(default)s)")
    ap.add_argument("--no-profile", action="store_true", help="skip the per-phase profile of a slice's step")
    ap.add_argument("--cases", default="digits,mnist", help="comma-separated: digits, mnist")
    ap.add_argument(
        "--seq-models",
        type=int,
        default=None,
        help="sequential torch trainings actually timed (the rate per model is the same; default min(K, 32))",
    )
    args = ap.parse_args(argv)
    Ks = [int(k) for k in (args.K or ("2" if args.smoke else "32,128")).split(",")]
    steps = args.steps or (2 if args.smoke else 20)
    repeats = args.repeats or (1 if args.smoke else 3)
    epochs = args.epochs if args.epochs is not None else (0 if args.smoke else 1)

    if args.threads == 1:  # XLA's CPU threads are set before jax is imported (one thread, or every core)
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    import jax  # noqa: F401
    import torch  # noqa: F401  (loaded before the limits so that its OpenMP pool is limited too)

    limiter = set_threads(args.threads)
    cases = [c for c in load_cases(args.data_dir, 3_000 if args.smoke else 12_000) if c.name in args.cases.split(",")]
    print(
        f"caviar engine benchmark: K={Ks}, {steps} steps x {repeats} interleaved repeats, "
        f"{args.threads} threads, float32, BN + ReLU + Adam"
    )
    print(machine_state())
    print(describe_blas())
    print(torch_threads())
    print(jax_threads())
    peaks, results, fit_rows = {}, {}, []
    for case in cases:
        widths = (case.n_in, *HIDDEN, 10)
        peaks[case.name], line = matmul_rate(
            mlp_gemm_shapes(widths, case.batch), batch=32, repeats=1 if args.smoke else 5
        )
        print(f"{case.name} ({'-'.join(map(str, widths))}, batch {case.batch}, {case.source}): {line}", flush=True)
        for i, K in enumerate(Ks):
            seq_models = args.seq_models or min(K, 32)
            res = bench_case(case, K, steps, repeats, seq_models, with_single=i == 0)
            bound_s, bound_line = step_bound(widths, case.batch, K, args.threads, repeats=1 if args.smoke else 3)
            res["bound"] = (K * case.batch / bound_s, bound_line)
            results[(case.name, K)] = res
            print(
                f"  {case.name} K={K}: " + ", ".join(f"{k} {_med(v):,.0f}/s" for k, v in res["rates"].items()),
                flush=True,
            )
            if epochs and i == 0:
                fit_s = float(np.median([caviar_fit(case, K, epochs)() for _ in range(max(1, repeats // 2))]))
                fit_rows.append(
                    [case.name, f"K={K} Trainer.fit, {epochs} epoch(s)", f"{K * len(case.y) * epochs / fit_s:,.0f}"]
                )
        if not args.no_profile:
            print_profile(case, Ks[0], args.threads)
    text, summary = report(cases, results, Ks, peaks)
    print()
    print(text)
    if fit_rows:
        print()
        print(table(["data", "measure", "caviar (model-samples/s)"], fit_rows))
    print("\n## Summary (the strongest anchor first)")
    for line in summary:
        print(line)
    print("\n## The measured bound (the step's matmuls at their measured rates + Adam's memory traffic)")
    for line in bound_lines(cases, results, Ks, peaks):
        print(line)
    del limiter


if __name__ == "__main__":
    main()
