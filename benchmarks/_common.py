"""Shared helpers for the benchmarks: machine state, thread settings, BLAS information, interleaved
timing with its spread, the real flop count of an MLP, the machine's float32 matmul rate, tables."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def set_threads(n: int) -> Any:
    """Give BLAS, OpenMP and torch (if imported) the same ``n`` threads; returns the threadpoolctl
    limiter, which must be kept alive for the limit to hold."""
    from threadpoolctl import threadpool_limits

    limiter = threadpool_limits(limits=n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    return limiter


def blas_info() -> list[dict[str, Any]]:
    """What threadpoolctl sees: each thread pool's library, kernel (architecture) and thread count."""
    from threadpoolctl import threadpool_info

    keys = ("user_api", "internal_api", "prefix", "version", "architecture", "threading_layer", "num_threads")
    # architecture is OpenBLAS's kernel (its coretype: Haswell, SkylakeX, Zen...), set by OPENBLAS_CORETYPE
    return [{k: info.get(k) for k in keys} for info in threadpool_info()]


def describe_blas() -> str:
    """One line per thread pool: 'blas openblas 0.3.x (Haswell kernel, pthreads, 2 threads)'."""
    lines = []
    for i in blas_info():
        kernel = f"{i['architecture']} kernel, " if i.get("architecture") else ""
        layer = f"{i['threading_layer']}, " if i.get("threading_layer") else ""
        lines.append(
            f"{i['user_api']}: {i['internal_api']} {i.get('version') or ''} ({kernel}{layer}"
            f"{i['num_threads']} threads) [{i['prefix']}]"
        )
    return "\n".join(lines)


def interleaved(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median of ``repeats`` runs of each function, run in turn (a, b, c, a, b, c, ...).

    Interleaving spreads any slowdown of the machine over every contestant, so ratios stay fair.
    Each function returns the seconds of the part that counts (it may exclude its own set-up).
    """
    return {name: float(np.median(ts)) for name, ts in interleaved_runs(fns, repeats).items()}


def interleaved_runs(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Every run's seconds of each function, run in turn (a, b, c, a, b, c, ...)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(fn())
    return times


def spread(values: Iterable[float], fmt: str = "{:.2f}") -> str:
    """'median (min-max)' of a few runs: how far one run is from the next."""
    v = [float(x) for x in values]
    med = float(np.median(v))
    if len(v) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(v))}-{fmt.format(max(v))})"


# ------------------------------------------------------------------------------ the machine's state
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_state() -> str:
    """Cores, load average, CPU model, Python and numpy, and OPENBLAS_CORETYPE if set: a busy machine
    (load average above its cores) makes every figure of the run noisy."""
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    return (
        f"machine: {cpu_model()}, {os.cpu_count()} cores, load average {load} (1, 5, 15 min); "
        f"Python {platform.python_version()}, numpy {np.__version__}; "
        f"OPENBLAS_CORETYPE={coretype if coretype is not None else '(unset)'}"
    )


def byte_compile_caviar() -> str:
    """Byte-compile caviar's modules, as installing its wheel does (pip compiles every module it
    installs), and say so. A development checkout is an editable install, and where
    PYTHONDONTWRITEBYTECODE is set (it is on the development VM) every process would compile caviar's
    ~100 modules from source again (~75 ms of each start) while the anchors' site-packages come
    compiled: timed as whole processes, both sides start from compiled modules."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("caviar")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        compileall.compile_dir(folder, quiet=1)
    flag = os.environ.get("PYTHONDONTWRITEBYTECODE")
    return (
        f"caviar: modules byte-compiled in {', '.join(folders)} (as a wheel's install does); "
        f"PYTHONDONTWRITEBYTECODE={'(unset)' if flag is None else flag}"
    )


def torch_threads() -> str:
    """torch's intra-op and inter-op threads and the OpenMP/MKL environment (torch imported here)."""
    import torch

    env = ", ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"))
    return (
        f"torch {torch.__version__}: {torch.get_num_threads()} intra-op threads, "
        f"{torch.get_num_interop_threads()} inter-op threads; {env}"
    )


def jax_threads() -> str:
    """JAX's backend and devices and the XLA flags that set its CPU threads (jax imported here)."""
    import jax

    flags = os.environ.get("XLA_FLAGS", "(unset: XLA's CPU thread pool uses every core)")
    return f"jax {jax.__version__}: backend {jax.default_backend()}, devices {jax.devices()}; XLA_FLAGS={flags}"


# --------------------------------------------------------------------------------------- flops
def mlp_flops(widths: Sequence[int]) -> tuple[int, int]:
    """(forward, training) matmul flops per sample of an MLP with layer widths ``widths`` (inputs first).

    Forward: 2 n_in n_out per layer. Training: the forward, each layer's weight gradient (as many flops),
    and each layer's input gradient except the first's (nobody needs the gradient of the data): what
    caviar, torch and XLA compute. Elementwise work (batch norm, activations, the optimizer) is not counted.
    """
    prods = [a * b for a, b in zip(widths[:-1], widths[1:], strict=False)]
    forward = 2 * sum(prods)
    return forward, forward + 2 * sum(prods) + 2 * sum(prods[1:])


def gemm_gflops(shapes: Sequence[tuple[int, int, int]], batch: int = 1, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of numpy float32 matmuls (m, k) @ (k, n) on the current threads, stacked ``batch`` deep
    as np.matmul of (batch, m, k) @ (batch, k, n) (how a K-population hands BLAS its products), keyed
    'm x k x n'. Each of ``repeats`` timings loops for at least 50 ms; the best one counts: a ceiling,
    and a loaded machine only ever lowers a timing."""
    rng = np.random.default_rng(0)
    rates = {}
    for m, k, n in shapes:
        a = rng.standard_normal((batch, m, k)).astype(np.float32)
        b = rng.standard_normal((batch, k, n)).astype(np.float32)
        out = np.empty((batch, m, n), np.float32)
        flops = 2.0 * batch * m * k * n
        loops = max(1, int(5e9 * 0.05 // flops))  # ~50 ms at 5 GFLOP/s, less on a faster machine
        np.matmul(a, b, out=out)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(loops):
                np.matmul(a, b, out=out)
            best = min(best, (time.perf_counter() - start) / loops)
        rates[f"{m}x{k}x{n}" + (f" (x{batch})" if batch > 1 else "")] = flops / best / 1e9
    return rates


def mlp_gemm_shapes(widths: Sequence[int], batch: int) -> list[tuple[int, int, int]]:
    """The matmul shapes of one training step of an MLP: forward (batch, in) @ (in, out) and the weight
    gradient (in, batch) @ (batch, out) of every layer."""
    shapes = []
    for a, b in zip(widths[:-1], widths[1:], strict=False):
        shapes += [(batch, a, b), (a, batch, b)]
    return shapes


def matmul_rate(shapes: Sequence[tuple[int, int, int]], batch: int = 1, repeats: int = 5) -> tuple[float, str]:
    """The machine's float32 matmul rate for these sizes, and a line saying what each GEMM reached.

    Each shape (and a 2048^3 matmul) is timed on all the current BLAS threads, and on one thread, the
    latter counted once per core (every core running its own matmul, perfect scaling assumed: how a
    population split in one slice per core uses them). The highest figure is the rate: a conservative
    ceiling, so a fraction of it is never flattered by a slow shape or by OpenBLAS's threading.
    """
    from threadpoolctl import threadpool_limits

    cores = os.cpu_count() or 1
    big = [(2048, 2048, 2048)]
    all_threads = {**gemm_gflops(big, 1, repeats), **gemm_gflops(shapes, batch, repeats)}
    with threadpool_limits(limits=1, user_api="blas"):
        one = {k: v * cores for k, v in {**gemm_gflops(big, 1, repeats), **gemm_gflops(shapes, batch, repeats)}.items()}
    best = max(*all_threads.values(), *one.values())
    line = ", ".join(f"{k} {all_threads[k]:.1f} / {one[k]:.1f}" for k in all_threads)
    return best, (
        f"numpy float32 GEMM GFLOP/s (all BLAS threads / one thread x {cores} cores): {line}; rate used: {best:.1f}"
    )


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """A function that runs ``fn`` and returns the seconds it took."""

    def run() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return run


def matmul_gflops(n: int = 2048, repeats: int = 5, dtype: type = np.float32) -> float:
    """GFLOP/s of an (n, n) @ (n, n) numpy matmul on the current threads (median of ``repeats``)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)
    ts = [timed(lambda: np.matmul(a, b, out=out))() for _ in range(repeats)]
    return 2.0 * n**3 / float(np.median(ts)) / 1e9


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (also readable in a terminal)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


# ------------------------------------------------------------------------------ the measured bound
def memory_bandwidth(threads: int, nbytes: int, repeats: int = 5) -> float:
    """Bytes per second that ``threads`` threads stream at once, each copying its own float32 arrays of
    ``nbytes`` together (source and destination: a read and a write per element; numpy releases the
    GIL on such copies), warm: data of that size, in whatever cache holds it, moves no faster. The
    best of ``repeats`` timings of at least ~20 ms each, a ceiling like ``gemm_gflops``."""
    from concurrent.futures import ThreadPoolExecutor

    n = max(1024, nbytes // 8)
    src = [np.ones(n, np.float32) for _ in range(threads)]
    dst = [np.empty(n, np.float32) for _ in range(threads)]
    loops = max(1, int(0.02 * 20e9 // (8 * n)))  # ~20 ms at 20 GB/s

    def copy(i: int) -> None:
        for _ in range(loops):
            np.copyto(dst[i], src[i])

    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats + 1):  # the first run pages the arrays in
            start = time.perf_counter()
            list(pool.map(copy, range(threads)))
            best = min(best, (time.perf_counter() - start) / loops)
    return 8.0 * n * threads / best


def step_matmuls(widths: Sequence[int], batch: int) -> list[tuple[int, int, int]]:
    """Every matmul (m, k, n) of one member's training step: forward (batch, in) @ (in, out), the weight
    gradient (in, batch) @ (batch, out), and the input gradient (batch, out) @ (out, in) of every layer
    but the first (the flops ``mlp_flops`` counts)."""
    shapes = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=False)):
        shapes += [(batch, a, b), (a, batch, b)] + ([(batch, b, a)] if i > 0 else [])
    return shapes


def step_bound(widths: Sequence[int], batch: int, K: int, cores: int, repeats: int = 3) -> tuple[float, str]:
    """The least time one step of a K-member population (BN + ReLU MLP, Adam, float32) can take on
    ``cores`` cores, measured: each of the step's matmuls at the rate numpy reaches for its shape on
    one thread, stacked over a slice's members, with the slices on every core at once (perfect
    scaling: how caviar splits a population); plus Adam's memory traffic (parameter, gradient and two
    moments read, three written: 28 bytes per parameter) at the bandwidth ``cores`` threads stream
    copying arrays of a slice's footprint (warm: cache-resident where a slice's arrays fit).
    Batch norm, activations and the loss count nothing: a bound no engine of these matmuls can beat.
    Returns (seconds, a line saying what it is made of)."""
    from threadpoolctl import threadpool_limits

    members = max(1, min(32, -(-K // cores)))  # a slice's members (32 at most: the rate has settled)
    shapes = step_matmuls(widths, batch)
    with threadpool_limits(limits=1, user_api="blas"):
        rates = gemm_gflops(shapes, members, repeats)
    gemm_s = sum(2.0 * K * m * k * n / (rates[f"{m}x{k}x{n}" + (f" (x{members})" if members > 1 else "")] * 1e9)
                 for m, k, n in shapes) / cores  # fmt: skip
    n_params = sum(a * b + 2 * b for a, b in zip(widths[:-1], widths[1:], strict=False))
    bandwidth = memory_bandwidth(cores, 16 * members * n_params)  # the footprint of a slice's 4 arrays
    adam_s = 28.0 * K * n_params / bandwidth
    total = gemm_s + adam_s
    return total, (
        f"matmuls {gemm_s * 1e3:.2f} ms (one-thread rates x {cores} cores) + Adam {adam_s * 1e3:.2f} ms "
        f"({28 * K * n_params / 1e6:.1f} MB at {bandwidth / 1e9:.1f} GB/s) = {total * 1e3:.2f} ms per step"
    )
