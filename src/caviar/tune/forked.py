"""Helper processes forked beside a study's own process, so small populations train on every core.

Populations of a few members train side by side on threads poorly: each step is mostly short calls
that hold the GIL, and two threads wait for each other (a 64-trial digits study whose space tunes the
architecture ran its 8 populations on 2 threads in 0.76 of the time one thread took, not 0.5). A
process of its own per core has no GIL to share. Forked, a helper starts at once with what the study's
process has loaded (caviar, numpy, the data, the numba kernels); a spawned one spends ~0.7 s importing
and loading them again.

What forking must not carry over, and how it does not: the helper opens its own storage connection
(the parent's is never touched in the child) and gets a worker id of its own (its pid: a helper that
dies has its trials requeued, ``caviar.tune.worker.recover_zombies``); the trainer's thread pool is
forgotten (``caviar.train.trainer``'s fork hook: its threads do not exist in the child); standard
output and error are opened anew (another thread may have held their locks at the fork); and it dies
with the study's process (Linux: ``PR_SET_PDEATHSIG``). Linux only: elsewhere fork is unsafe and the
populations train on threads.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import signal
import sys
import warnings
from collections.abc import Callable
from typing import Any


def can_fork() -> bool:
    """Whether helpers may be forked here (Linux, where fork is a start method)."""
    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


def start_helpers(n: int, target: Callable[..., None], args: tuple[Any, ...]) -> list[Any]:
    """``n`` forked processes running ``target(*args)``, started.

    First the young garbage is collected and every object alive is frozen (``gc.freeze``), as Python's
    documentation advises before a fork: the helpers' collections then never touch (so never copy) the
    pages of what they inherited, and no collection here or at exit walks the study's long-lived
    state again (modules, the data, the storage: at a 64-trial digits study's exit that walk took
    ~0.25 s, an eighth of the study). What is frozen stays out of the cycle collector's reach until
    the process ends (objects freed by their reference counts are freed as ever; cycles among them are
    not): a long-lived process that runs study after study can hand them back with ``gc.unfreeze()``."""
    gc.collect(1)
    gc.freeze()
    context = mp.get_context("fork")
    helpers = [context.Process(target=_helper_main, args=(target, args), daemon=True) for _ in range(n)]
    with warnings.catch_warnings():
        # Python 3.12+ warns on forking a process with threads (a display's refresh, idle pools): the
        # hazards it warns of are handled above, the child takes no lock those threads hold
        warnings.simplefilter("ignore", DeprecationWarning)
        for h in helpers:
            h.start()
    return helpers


def _helper_main(target: Callable[..., None], args: tuple[Any, ...]) -> None:
    """The helper's first steps, then ``target``."""
    sys.stdout = open(os.dup(1), "w", buffering=1)  # noqa: SIM115 (the child's own, for its life)
    sys.stderr = open(os.dup(2), "w", buffering=1)  # noqa: SIM115
    die_with_parent()
    try:
        target(*args)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: no traceback from a helper
        return  # what it held is requeued by the study's process once this one has ended


def end_helpers(helpers: list[Any], timeout_s: float = 30.0) -> None:
    """Wait for helpers to end; those still running after ``timeout_s`` (or on an error) are terminated."""
    for h in helpers:
        h.join(timeout_s)
        if h.is_alive():
            h.terminate()
            h.join()


def die_with_parent() -> None:
    """On Linux, end this process when the process that started it dies (even by SIGKILL).

    Its RUNNING trials are then requeued by the next run (their worker's pid is gone), instead
    of a headless worker finishing a study nobody watches.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
