"""Shared helpers for the benchmarks: thread settings, BLAS information, interleaved timing, tables."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(fn())
    return {name: float(np.median(ts)) for name, ts in times.items()}


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
