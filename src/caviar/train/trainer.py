"""Mini-batch training of a population of K networks that share one architecture: the one training loop.

The members see the same mini-batches (their order comes from the population's seed) and differ
in their per-member hyperparameters and their own random streams (weights, dropout). A member that
diverges (non-finite loss), stops early or is pruned leaves the population: the arrays are
compacted so that the others go on at full speed, and its kept weights are set aside.

Everything that trains a network drives a ``Trainer`` through its public API, never its attributes:

- whole runs: ``fit`` (epochs until done, with callbacks), ``finish``, ``stacked_kept``;
- stepping: ``begin_epoch`` (draws the epoch's mini-batches), ``train_next_batch`` (one step on the
  next of them; ``epoch_done`` says when they are spent), ``end_epoch`` (the epoch's rows, best
  weights, early stopping); ``train_epoch`` is the three for one epoch; ``train_step`` one step on a
  batch the caller chose;
- starting points: ``checkpoint`` / ``restore`` (back to a point of this run, mid-epoch included),
  ``warm_start`` (a fresh trainer goes on from a checkpoint, member to member),
  ``replicate`` (every member starts from one member of a checkpoint: a population around one
  model), ``load_weights`` (given parameters and running statistics, a fresh optimizer);
- between steps: ``replace_members`` (member j becomes an exact copy of member i: weights, optimizer
  moments, running statistics, generator, hyperparameters) and ``set_hyperparameter``.

Speed: gradients go into preallocated arrays and the optimizer updates in cache-sized blocks (see
``Optimizer.apply``). When K is at least the number of threads, the population is split into that
many slices of members run side by side on a persistent thread pool, BLAS limited to one thread
each (numpy releases the GIL in matmuls and ufuncs, and one BLAS thread per slice wastes nothing on
small matrices); otherwise BLAS threads the matmuls.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import numpy as np

from caviar.backend import Backend, default_backend
from caviar.config import PER_MEMBER, TrainConfig
from caviar.data.batches import minibatch_indices
from caviar.nn import padding
from caviar.nn.losses import LOSSES
from caviar.nn.network import Architecture, Arrays, backward, forward, init_params, weight_names
from caviar.optim.optimizers import Optimizer, OptimizerState
from caviar.optim.schedules import decayed_lr
from caviar.seeding import data_rng, member_rng
from caviar.train.history import MemberHistory

EVAL_CHUNK = 8192
#: A mean cross-entropy above this has diverged: chance level is log(C) (2.3 for 10 classes), and batch
#: norm can keep a blown-up network's loss finite (1e30 and more) where it would otherwise be inf/NaN.
DIVERGED_LOSS = 1e4
SMALL_MATMUL = 4 * 1024 * 1024  # multiply-adds of one member's largest matmul below which BLAS gets 1 thread
#: Multiply-adds of a whole call (all members, forward and backward) below which the population is not
#: split across threads: handing a slice to a thread costs ~0.3 ms, about 25M multiply-adds of work.
SPLIT_MIN_MACS = 32 * 1024 * 1024

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_BLAS: dict[str, object] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide thread pool with at least ``workers`` threads (persistent: no start-up per step)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="caviar")
        return _POOL


def _forget_pool() -> None:
    """In a forked child: the pool's threads did not come along (nor, safely, its lock's state); the
    next split starts a new pool."""
    global _POOL, _POOL_LOCK
    _POOL = None
    _POOL_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def blas_threads() -> int:
    """The number of threads BLAS is set to use now (threadpoolctl), or the CPU count if unknown."""
    try:
        from threadpoolctl import threadpool_info

        counts = [int(i["num_threads"]) for i in threadpool_info() if i.get("user_api") == "blas"]
    except Exception:  # threadpoolctl missing or a library it cannot read
        counts = []
    return max(counts) if counts else (os.cpu_count() or 1)


def splits_across_threads(widths: Sequence[int], K: int, batch: int, threads: int) -> bool:
    """Whether a population of ``K`` members of layer ``widths`` is split into slices on ``threads``
    threads for a call on ``batch`` rows: at least two threads, a member per thread, and a call's
    work (3 x K x batch x the layer products, forward and backward) of at least ``SPLIT_MIN_MACS``."""
    work = 3 * K * batch * sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=False))
    return 2 <= threads <= K and work >= SPLIT_MIN_MACS


def _one_blas_thread() -> AbstractContextManager:
    """Limit BLAS to one thread (restored on exit); the controller is built once (it scans libraries)."""
    try:
        if "controller" not in _BLAS:
            from threadpoolctl import ThreadpoolController

            _BLAS["controller"] = ThreadpoolController()
        return _BLAS["controller"].limit(limits=1, user_api="blas")  # type: ignore[attr-defined]
    except Exception:
        return nullcontext()


class StepCallback(Protocol):
    """Called after every step with its losses (K,); True stops the whole population."""

    def on_step_end(self, trainer: Trainer, loss: np.ndarray) -> bool | None: ...


class EpochCallback(Protocol):
    """Called after every epoch with its rows by member; True stops the whole population."""

    def on_epoch_end(self, trainer: Trainer, rows: dict[int, dict[str, float]]) -> bool | None: ...


#: A callback of ``fit`` / ``train_epoch``: either hook, or both.
Callback = StepCallback | EpochCallback


@dataclass
class Checkpoint:
    """Everything needed to continue training exactly from a point, mid-epoch included.

    Arrays hold one row per member active when it was taken (``members``, their original indices).
    """

    params: Arrays
    state: Arrays
    opt_state: OptimizerState
    hp: dict[str, np.ndarray]
    epoch: int
    step: int
    rng_state: Mapping[str, Any]  # the data generator now (after drawing the running epoch's batches, if any)
    members: list[int]
    history_rows: list[list[dict[str, float]]]  # every member's curve, retired ones included
    member_rng_states: list[Mapping[str, Any]]
    bests: list[tuple[int, float]]  # (best_epoch, best_score) per member
    best_arrays: dict[int, tuple[Arrays, Arrays]]
    epoch_sums: np.ndarray
    batches: list[np.ndarray] | None = None  # the running epoch's mini-batches (None: between epochs)
    batch_pos: int = 0  # how many of them are done
    epoch_rng_state: Mapping[str, Any] | None = None  # the data generator before they were drawn

    def row(self, member: int) -> int:
        """The row of original member ``member`` in the checkpoint's arrays."""
        if member not in self.members:
            raise ValueError(f"member {member} was not training when the checkpoint was taken")
        return self.members.index(member)


@dataclass
class _SliceViews:
    """A slice's views of the trainer's arrays, valid while ``sources`` are the trainer's dicts."""

    sources: tuple
    params: Arrays
    grads: Arrays
    plan: list | None

    def built_from(self, sources: tuple) -> bool:
        return all(a is b for a, b in zip(self.sources, sources, strict=True))


def hyperparameters_from(configs: Sequence[dict[str, float]], base: TrainConfig, dropout: float = 0.0) -> dict:
    """(K,) arrays of the per-member hyperparameters, from each member's values over ``base``."""
    defaults: dict[str, Any] = {name: getattr(base, name, None) for name in PER_MEMBER}
    defaults["dropout"] = dropout
    return {name: np.array([float(c.get(name, defaults[name])) for c in configs]) for name in PER_MEMBER}


class Trainer:
    """Trains K members of one architecture together; K = 1 is the single model."""

    def __init__(
        self,
        arch: Architecture,
        train: TrainConfig,
        hp: dict[str, np.ndarray],
        member_ids: Sequence[int],
        seed: int,
        dtype: np.dtype | type = np.float32,
        restore_best: bool | None = None,
        shuffle: bool = True,
        threads: int | None = None,
        backend: Backend | str | None = None,
        loss: str = "cross_entropy",
        member_hidden: Sequence[Sequence[int]] | None = None,
    ) -> None:
        """``loss``: a name of caviar.nn.losses.LOSSES (``squared_error``/``huber`` for a regression's
        linear output, one unit). ``threads``: slices of the population trained side by side (1: none); None: as many as
        BLAS threads are set (threadpoolctl), used only when K is at least that number.
        ``backend``: fused numba kernels or numpy passes (``caviar.backend``); None: what the
        environment says (``CAVIAR_KERNELS``), resolved here once and passed down.
        ``member_hidden``: each member's own hidden widths, of ``arch``'s depth and at most its widths:
        members narrower than ``arch`` train padded, their padding exactly inert (``caviar.nn.padding``)."""
        self.backend = default_backend() if backend is None else Backend.of(backend)
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")
        self.loss = loss
        self._loss_fn = LOSSES[loss]
        self.arch = arch
        self.config = train
        self.dtype = np.dtype(dtype)
        self.member_ids = list(member_ids)
        K = len(self.member_ids)
        self.hp = {name: np.broadcast_to(np.asarray(hp[name], dtype=float), (K,)).copy() for name in PER_MEMBER}
        self.rngs = [member_rng(seed, m) for m in self.member_ids]
        #: each original member's own hidden widths (None: every member has ``arch.hidden``)
        self.member_hidden: list[tuple[int, ...]] | None = None
        if member_hidden is not None and any(tuple(h) != arch.hidden for h in member_hidden):
            self.member_hidden = [tuple(int(w) for w in h) for h in member_hidden]
            if len(self.member_hidden) != K or padding.padded_hidden(self.member_hidden) != arch.hidden:
                raise ValueError(
                    f"member_hidden: {K} members padded to {arch.hidden} need K widths, widest {arch.hidden}"
                )
            self.params, self.state = padding.init_padded(arch, self.member_hidden, self.rngs, self.dtype)
        else:
            self.params, self.state = init_params(arch, self.rngs, self.dtype)
        self._grads: Arrays = {}
        self._views: dict[tuple[int, int], _SliceViews] = {}
        self._blas_held = False  # True while train_epoch holds the BLAS thread setting for its steps
        self.optimizer = Optimizer(train.optimizer, self.backend)
        self.opt_state = self.optimizer.init(self.params)
        self.threads = threads
        self.data_rng = data_rng(seed)
        self.shuffle = shuffle
        self.restore_best = train.early_stopping if restore_best is None else restore_best
        self.active = np.arange(K)  # original member index of each row of the stacked arrays
        self.histories = [MemberHistory(m) for m in self.member_ids]
        self.kept: dict[int, tuple[Arrays, Arrays]] = {}  # members that left, and their weights
        self._best: dict[int, tuple[Arrays, Arrays]] = {}
        self._decayed = frozenset(weight_names(self.params))
        self.epoch = 0
        self.step = 0
        self._epoch_sums = np.zeros((K, 3))  # loss * n, correct, n of the running epoch
        self._batches: list[np.ndarray] | None = None  # the running epoch's mini-batches
        self._batch_pos = 0
        self._epoch_rng_state: Mapping[str, Any] | None = None  # data generator before they were drawn
        self._refresh_lr()

    # ----- hyperparameters -------------------------------------------------------------------
    @property
    def K(self) -> int:
        """Members still training."""
        return len(self.active)

    def _refresh_lr(self) -> None:
        c = self.config
        self.lr = decayed_lr(
            self.hp["learning_rate"], c.decay, self.hp["lr_decay"], self.epoch, c.epochs, c.decay_every
        )

    def set_hyperparameter(self, name: str, value: float | np.ndarray, members: Sequence[int] | None = None) -> None:
        """Change a per-member hyperparameter from the next step on: every active member, or the
        original members given; ``value`` is one number or one per member changed. The learning
        rate is recomputed (decay at the current epoch)."""
        if name not in PER_MEMBER:
            raise ValueError(f"{name!r} cannot change during training; one of {', '.join(PER_MEMBER)} can")
        rows = slice(None) if members is None else [self._row(m) for m in members]
        self.hp[name][rows] = value
        self._refresh_lr()

    def hyperparameters(self, member: int) -> dict[str, float]:
        """The per-member hyperparameters of original member ``member`` (active)."""
        j = self._row(member)
        return {name: float(v[j]) for name, v in self.hp.items()}

    def _row(self, member: int) -> int:
        where = np.flatnonzero(self.active == member)
        if where.size == 0:
            raise ValueError(f"member {member} is not training")
        return int(where[0])

    # ----- one step --------------------------------------------------------------------------
    def train_step(self, xb: np.ndarray, yb: np.ndarray, wb: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One gradient step of every active member on the batch; returns (loss, accuracy) (K,).
        ``wb`` (B,): sample weights, the batch's loss their weighted mean (``caviar.nn.losses``)."""
        self._ensure_grads()
        self.opt_state.step += 1
        new_state = {n: np.empty_like(a) for n, a in self.state.items()}
        table = None  # the optimizer's per-member coefficients, built once for all slices
        if self.backend.fused:
            table = self.optimizer.coefficient_table(self.lr, self.hp, self.opt_state.step, self.hp["l2"], self.dtype)
        parts = self._by_slices(partial(self._step_members, new_state=new_state, table=table, wb=wb), xb, yb)
        loss = np.concatenate([p[0] for p in parts])
        acc = np.concatenate([p[1] for p in parts])
        self.state = new_state
        self.step += 1
        n = len(yb) if wb is None else float(np.sum(wb, dtype=np.float64))  # the epoch's means are weighted too
        self._epoch_sums[:, 0] += loss * n
        self._epoch_sums[:, 1] += acc * n
        self._epoch_sums[:, 2] += n
        bad = ~(loss <= DIVERGED_LOSS)  # NaN compares False: caught too
        if bad.any():
            self.retire(self.active[bad], "diverged")
        return loss, acc

    def _step_members(
        self,
        k0: int,
        k1: int,
        xb: np.ndarray,
        yb: np.ndarray,
        new_state: Arrays,
        table: np.ndarray | None = None,
        wb: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Forward, backward and update of members k0..k1 (rows of the stacked arrays).

        Members are independent, so slices can run on different threads: each writes only its
        own rows of the parameters, gradients, optimizer slots and ``new_state``.
        """
        rows = slice(k0, k1)
        hp = {n: v[rows] for n, v in self.hp.items()}
        views = self._slice_views(k0, k1)
        params, grads = views.params, views.grads
        dropout = hp["dropout"] if np.any(hp["dropout"] > 0) else None
        own = self._active_hidden(k0, k1)
        logits, caches, state = forward(
            self.arch,
            params,
            {n: a[rows] for n, a in self.state.items()},
            xb,
            train=True,
            bn_momentum=hp["bn_momentum"],
            dropout=dropout,
            rngs=self.rngs[k0:k1],
            backend=self.backend,
            member_hidden=own,
            sample_weight=wb,
        )
        loss, acc, dlogits = self._loss(logits, yb, wb)  # fused: logits become dlogits
        backward(self.arch, params, caches, dlogits, out=grads, backend=self.backend, member_hidden=own)
        for n, a in state.items():
            new_state[n][rows] = a
        l2_on = bool(np.any(hp["l2"] > 0))  # no member of the slice decays: no L2 pass at all
        if views.plan is not None and table is not None:
            self.optimizer.apply_plan(views.plan, table[rows], self.opt_state.step, l2=l2_on)
        else:
            slots = {s: {n: a[rows] for n, a in d.items()} for s, d in self.opt_state.slots.items()}
            self.optimizer.apply(
                params,
                grads,
                slots,
                self.opt_state.step,
                self.lr[rows],
                hp,
                l2=hp["l2"] if l2_on else None,
                decayed=self._decayed,
                overwrite_grads=True,
            )
        return loss, acc

    def _active_hidden(self, k0: int, k1: int) -> list[tuple[int, ...]] | None:
        """Own widths of the active members in rows k0..k1 (None: not padded)."""
        if self.member_hidden is None:
            return None
        return [self.member_hidden[int(k)] for k in self.active[k0:k1]]

    def _slice_views(self, k0: int, k1: int) -> _SliceViews:
        """Views of members k0..k1 of the parameters and gradients, and the optimizer's fused plan
        over them: built once and reused while the arrays stay the same objects (compaction,
        ``restore`` or a caller replacing ``params`` / ``opt_state`` makes new ones)."""
        sources = (self.params, self._grads, self.opt_state.slots)
        views = self._views.get((k0, k1))
        if views is None or not views.built_from(sources):
            if not all(v.built_from(sources) for v in self._views.values()):
                self._views = {}  # the arrays changed: every slice's views are stale
            rows = slice(k0, k1)
            params = {n: a[rows] for n, a in self.params.items()}
            grads = {n: a[rows] for n, a in self._grads.items()}
            slots = {s: {n: a[rows] for n, a in d.items()} for s, d in self.opt_state.slots.items()}
            plan = self.optimizer.fused_plan(params, grads, slots, self._decayed)  # None: numpy passes
            views = self._views[k0, k1] = _SliceViews(sources, params, grads, plan)
        return views

    def _blas_for_one_slice(self, batch: int) -> AbstractContextManager:
        """One BLAS thread unless the matmuls are big enough for threads to pay.

        numpy hands BLAS one member's matmul at a time, so the size that counts is a member's.
        Measured on 2 quiet cores: threaded BLAS made a digits-sized step (64 x 64 x 128, 0.5M
        multiply-adds) 2.5x slower, and an MNIST-sized one (256 x 784 x 128, 26M) 1.25x faster.
        """
        w = self.arch.widths
        largest = batch * max(a * b for a, b in zip(w[:-1], w[1:], strict=False))
        return _one_blas_thread() if largest < SMALL_MATMUL else nullcontext()

    def _spans(self, batch: int) -> list[tuple[int, int]]:
        """Row ranges of the population slices run side by side for a call on ``batch`` rows: one
        range when not threading, or when the call is too small for a thread hand-off to pay
        (digits-sized: 8 members at batch 64 run faster on one thread than split in two)."""
        threads = blas_threads() if self.threads is None else int(self.threads)
        if self.threads is None:
            self.threads = threads  # looked up once: threadpoolctl scans the loaded libraries
        if not splits_across_threads(self.arch.widths, self.K, batch, threads):
            return [(0, self.K)]
        bounds = np.linspace(0, self.K, threads + 1).round().astype(int)
        return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def set_threads(self, threads: int) -> None:
        """Train the population's slices on up to ``threads`` threads from the next call on (a worker
        hands a population the cores others left); a member's numbers do not depend on it."""
        if isinstance(threads, bool) or not isinstance(threads, int | np.integer) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self.threads = int(threads)

    def _ensure_grads(self) -> None:
        """Gradient arrays shaped like the parameters, reused from step to step."""
        g = self._grads
        if g.keys() != self.params.keys() or any(
            g[n].shape != a.shape or g[n].dtype != a.dtype for n, a in self.params.items()
        ):
            self._grads = {n: np.empty_like(a) for n, a in self.params.items()}

    # ----- epochs ----------------------------------------------------------------------------
    def begin_epoch(self, n_samples: int) -> int:
        """Start an epoch over ``n_samples`` rows: zero its sums, draw its mini-batches from the data
        generator (in order with ``shuffle=False``); returns how many there are."""
        self._epoch_sums[:] = 0.0
        self._epoch_rng_state = self.data_rng.bit_generator.state
        self._batches = minibatch_indices(n_samples, self.config.batch_size, self.data_rng, self.shuffle)
        self._batch_pos = 0
        return len(self._batches)

    @property
    def in_epoch(self) -> bool:
        """True between ``begin_epoch`` and ``end_epoch``."""
        return self._batches is not None

    @property
    def epoch_done(self) -> bool:
        """True when every mini-batch of the running epoch has been trained on (or none is running)."""
        return self._batches is None or self._batch_pos >= len(self._batches)

    def train_next_batch(
        self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One step on the running epoch's next mini-batch of (X, y) (and its rows of ``sample_weight``);
        returns (loss, accuracy) (K,)."""
        if self._batches is None:
            raise RuntimeError("no epoch is running: call begin_epoch first")
        if self._batch_pos >= len(self._batches):
            raise RuntimeError("the epoch's mini-batches are spent: call end_epoch")
        idx = self._batches[self._batch_pos]
        self._batch_pos += 1
        return self.train_step(X[idx], y[idx], None if sample_weight is None else sample_weight[idx])

    def train_epoch(
        self,
        X: np.ndarray,
        y: np.ndarray,
        callbacks: Sequence[Callback] = (),
        sample_weight: np.ndarray | None = None,
    ) -> bool:
        """One pass over (X, y) in fresh mini-batches (``begin_epoch`` and ``train_next_batch``; the
        caller then calls ``end_epoch``); returns True if a callback asked to stop or none is left.
        ``sample_weight`` (N,): per-row weights of the loss (None: every row counts once)."""
        self.begin_epoch(len(y))
        with self._blas_context(self.config.batch_size, self._spans(self.config.batch_size)):
            self._blas_held = True
            try:
                while not self.epoch_done:
                    if self.K == 0:
                        return True
                    loss, _ = self.train_next_batch(X, y, sample_weight)
                    if any([cb.on_step_end(self, loss) for cb in callbacks if hasattr(cb, "on_step_end")]):
                        return True
            finally:
                self._blas_held = False
        return False

    def end_epoch(
        self,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        sample_weight_val: np.ndarray | None = None,
    ) -> dict[int, dict[str, float]]:
        """Close the epoch: record its row for every active member (train metrics from its steps,
        validation metrics on (X_val, y_val), weighted by ``sample_weight_val`` if given), keep bests,
        retire the members out of patience, move the learning rate to the next epoch. Returns the rows
        by original member."""
        sums = self._epoch_sums
        n = np.maximum(sums[:, 2], 1)
        train_loss, train_acc = sums[:, 0] / n, sums[:, 1] / n
        val_loss: np.ndarray | None = None
        val_acc: np.ndarray | None = None
        if X_val is not None and y_val is not None and len(y_val):
            val_loss, val_acc = self.evaluate(X_val, y_val, sample_weight_val)
        rows: dict[int, dict[str, float]] = {}
        score = val_loss if val_loss is not None else train_loss
        c = self.config
        stopped = []
        for j, k in enumerate(self.active):
            row = {
                "epoch": self.epoch,
                "train_loss": float(train_loss[j]),
                "train_accuracy": float(train_acc[j]),
                "lr": float(self.lr[j]),
            }
            if val_loss is not None and val_acc is not None:
                row["val_loss"] = float(val_loss[j])
                row["val_accuracy"] = float(val_acc[j])
            hist = self.histories[k]
            hist.rows.append(row)
            rows[int(k)] = row
            if np.isfinite(score[j]) and score[j] < hist.best_score - c.min_delta:
                hist.best_score = float(score[j])
                hist.best_epoch = len(hist.rows) - 1
                self._best[int(k)] = self._member_arrays(j)
            elif c.early_stopping and len(hist.rows) - 1 - hist.best_epoch >= c.patience:
                stopped.append(k)
        self.epoch += 1
        self._batches, self._batch_pos, self._epoch_rng_state = None, 0, None
        self._refresh_lr()
        if stopped:
            self.retire(np.array(stopped), "stopped")
        return rows

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        epochs: int | None = None,
        callbacks: Sequence[Callback] = (),
        sample_weight: np.ndarray | None = None,
        sample_weight_val: np.ndarray | None = None,
    ) -> list[MemberHistory]:
        """Train until ``epochs`` (the config's by default), every member stopped, or a callback stops;
        ``sample_weight`` / ``sample_weight_val``: per-row weights of the training and validation losses."""
        total = self.config.epochs if epochs is None else epochs
        while self.epoch < total and self.K > 0:
            if self.train_epoch(X, y, callbacks, sample_weight):
                break
            rows = self.end_epoch(X_val, y_val, sample_weight_val)
            if any([cb.on_epoch_end(self, rows) for cb in callbacks if hasattr(cb, "on_epoch_end")]):
                break
        self.finish()
        return self.histories

    def finish(self) -> None:
        """Members still training are done: keep their best weights if asked, else their last."""
        if self.K:
            self.retire(self.active.copy(), "done")

    # ----- members leaving ------------------------------------------------------------------
    def member_weights(self, member: int) -> tuple[Arrays, Arrays]:
        """Copies of active member ``member``'s parameters and running statistics (no population axis)."""
        return self._member_arrays(self._row(member))

    def _member_arrays(self, row: int) -> tuple[Arrays, Arrays]:
        return ({n: a[row].copy() for n, a in self.params.items()}, {n: a[row].copy() for n, a in self.state.items()})

    def retire(self, members: np.ndarray, status: str) -> None:
        """Take ``members`` (original indices) out of the population with the given status."""
        members = np.atleast_1d(members)
        for k in members:
            k = int(k)
            j = self._row(k)
            hist = self.histories[k]
            hist.status = status
            hist.stopped_epoch = self.epoch
            use_best = k in self._best and (status in ("diverged", "stopped") or self.restore_best)
            self.kept[k] = self._best[k] if use_best else self._member_arrays(j)
            if not use_best and status != "diverged":
                hist.best_epoch = len(hist.rows) - 1
        keep = ~np.isin(self.active, members)
        self._compact(keep)

    def _compact(self, keep: np.ndarray) -> None:
        self.params = {n: a[keep] for n, a in self.params.items()}
        self.state = {n: a[keep] for n, a in self.state.items()}
        self.opt_state = self.opt_state.select(keep)
        self.hp = {n: v[keep] for n, v in self.hp.items()}
        self.lr = self.lr[keep]
        self.rngs = [r for r, k in zip(self.rngs, keep, strict=True) if k]
        self._epoch_sums = self._epoch_sums[keep]
        self.active = self.active[keep]

    # ----- evaluation -----------------------------------------------------------------------
    def logits(self, X: np.ndarray) -> np.ndarray:
        """Evaluation-mode logits (K, N, C) of the active members, in chunks to bound memory."""
        return np.concatenate(self._by_slices(self._slice_logits, X), axis=0)

    def evaluate(
        self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(loss, accuracy) of each active member on (X, y), in evaluation mode: X (N, F) shared by
        the members, labels (N,) or one row per member (K, N); weighted means with ``sample_weight`` (N,)."""
        parts = self._by_slices(partial(self._slice_evaluate, w=sample_weight), X, y)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _slice_logits(self, k0: int, k1: int, X: np.ndarray) -> np.ndarray:
        params = {n: a[k0:k1] for n, a in self.params.items()}
        state = {n: a[k0:k1] for n, a in self.state.items()}
        own = self._active_hidden(k0, k1)
        outs = [
            forward(
                self.arch, params, state, X[i : i + EVAL_CHUNK], train=False, backend=self.backend, member_hidden=own
            )[0]
            for i in range(0, len(X), EVAL_CHUNK)
        ]
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=1)

    def _slice_evaluate(
        self, k0: int, k1: int, X: np.ndarray, y: np.ndarray, w: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        z = self._slice_logits(k0, k1, X)
        if np.ndim(y) == 2:  # labels per member (K, N): this slice's rows
            y = y[k0:k1]
        loss, acc, _ = self._loss(z, y, w)  # fused: one pass; z is ours to overwrite
        return loss, acc

    def _loss(self, z: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The loss function on outputs z: unweighted exactly as before weights existed, else weighted."""
        if w is None:
            return self._loss_fn(z, y, self.backend)
        return self._loss_fn(z, y, self.backend, w)

    def _by_slices(self, fn: Callable, *args: np.ndarray) -> list:
        """``fn(k0, k1, *args)`` for each slice of the population, side by side like ``train_step``."""
        spans = self._spans(len(args[0]))
        with self._blas_context(len(args[0]), spans):
            if len(spans) == 1:
                return [fn(0, self.K, *args)]
            futures = [_pool(len(spans) - 1).submit(fn, *span, *args) for span in spans[1:]]
            return [fn(*spans[0], *args)] + [f.result() for f in futures]

    def _blas_context(self, batch: int, spans: list[tuple[int, int]]) -> AbstractContextManager:
        """BLAS threads for a call on ``batch`` rows: one per slice when the population is split, else
        ``_blas_for_one_slice``; nothing to do while ``train_epoch`` holds the setting for its steps
        (setting it costs tens of microseconds, a few percent of a small step)."""
        if self._blas_held:
            return nullcontext()
        return self._blas_for_one_slice(batch) if len(spans) == 1 else _one_blas_thread()

    def kept_weights(self, member: int) -> tuple[Arrays, Arrays]:
        """Kept (params, running statistics) of original member ``member`` (after ``finish``, or once
        it left) at its own widths: a padded member's arrays cut back (``caviar.nn.padding.cut``)."""
        if member not in self.kept:
            raise RuntimeError(f"member {member} is still training; call finish() first")
        params, state = self.kept[member]
        if self.member_hidden is None:
            return params, state
        hidden = self.member_hidden[member]
        return padding.cut(self.arch, hidden, params), padding.cut(self.arch, hidden, state)

    def stacked_kept(self) -> tuple[Arrays, Arrays]:
        """Kept weights of every member (after ``finish``), stacked back on axis 0 in member order."""
        K = len(self.member_ids)
        if len(self.kept) != K:
            raise RuntimeError("some members are still training; call finish() first")
        params = {n: np.stack([self.kept[k][0][n] for k in range(K)]) for n in self.kept[0][0]}
        state = {n: np.stack([self.kept[k][1][n] for k in range(K)]) for n in self.kept[0][1]}
        return params, state

    # ----- checkpoints and starting points --------------------------------------------------
    def checkpoint(self) -> Checkpoint:
        """A deep copy of the training state of the active members (mid-epoch included)."""
        return Checkpoint(
            params={n: a.copy() for n, a in self.params.items()},
            state={n: a.copy() for n, a in self.state.items()},
            opt_state=self.opt_state.copy(),
            hp={n: v.copy() for n, v in self.hp.items()},
            epoch=self.epoch,
            step=self.step,
            rng_state=self.data_rng.bit_generator.state,
            members=[int(k) for k in self.active],
            history_rows=[[dict(r) for r in h.rows] for h in self.histories],
            member_rng_states=[r.bit_generator.state for r in self.rngs],
            bests=[(h.best_epoch, h.best_score) for h in self.histories],
            best_arrays=dict(self._best),  # kept arrays are never written in place: sharing is safe
            epoch_sums=self._epoch_sums.copy(),
            batches=None if self._batches is None else list(self._batches),  # index arrays: never written
            batch_pos=self._batch_pos,
            epoch_rng_state=self._epoch_rng_state,
        )

    def restore(self, ckpt: Checkpoint) -> None:
        """Go back to ``ckpt`` of this run (the same active members): weights, optimizer, counters,
        generators, curves, best-epoch records and the running epoch's position; the continuation
        is then bit for bit the first one's."""
        if [int(k) for k in self.active] != ckpt.members:
            raise ValueError("checkpoint was taken with a different set of active members")
        self.params = {n: a.copy() for n, a in ckpt.params.items()}
        self.state = {n: a.copy() for n, a in ckpt.state.items()}
        self.opt_state = ckpt.opt_state.copy()
        self.hp = {n: v.copy() for n, v in ckpt.hp.items()}
        self.epoch, self.step = ckpt.epoch, ckpt.step
        self.data_rng.bit_generator.state = ckpt.rng_state
        for rng, state in zip(self.rngs, ckpt.member_rng_states, strict=True):
            rng.bit_generator.state = state
        for h, rows, (best_epoch, best_score) in zip(self.histories, ckpt.history_rows, ckpt.bests, strict=True):
            h.rows[:] = [dict(r) for r in rows]
            h.best_epoch, h.best_score = best_epoch, best_score
        self._best = dict(ckpt.best_arrays)
        self._epoch_sums = ckpt.epoch_sums.copy()
        self._batches = None if ckpt.batches is None else list(ckpt.batches)
        self._batch_pos, self._epoch_rng_state = ckpt.batch_pos, ckpt.epoch_rng_state
        self._refresh_lr()

    def warm_start(self, source: Checkpoint) -> None:
        """Go on from ``source`` (another trainer's, same architecture and as many active members):
        member by member, its weights, running statistics, optimizer slots and step, dropout
        generators, epoch/step counters and data order. A fresh trainer warm-started from a
        checkpoint taken at an epoch's end trains on exactly as the source would have; its own
        curves start empty, its hyperparameters are its own. A checkpoint taken mid-epoch restarts
        that epoch from its first batch."""
        if len(source.members) != self.K:
            raise ValueError(f"checkpoint has {len(source.members)} members, this trainer {self.K}")
        self._start_from(source, list(range(self.K)))
        for rng, state in zip(self.rngs, source.member_rng_states, strict=True):
            rng.bit_generator.state = state

    def replicate(self, source: Checkpoint, member: int = 0) -> None:
        """Every member starts from ``member`` of ``source`` (a population around one model, e.g.
        panda's fork): its weights, running statistics, optimizer slots and step, epoch/step
        counters and data order, as ``warm_start``. Each member keeps its own hyperparameters and its
        own dropout generator (from its id): copies drawing the same masks would explore nothing."""
        self._start_from(source, [source.row(member)] * self.K)

    def _start_from(self, source: Checkpoint, rows: list[int]) -> None:
        """Rows ``rows`` of ``source`` become the active members' training state (see warm_start)."""
        pick = np.asarray(rows)
        self._check_like(source.params, self.params, "parameters")
        self._check_like(source.state, self.state, "running statistics")
        self.params = {n: a[pick].copy() for n, a in source.params.items()}
        self.state = {n: a[pick].copy() for n, a in source.state.items()}
        slots = source.opt_state.slots
        if slots.keys() != self.opt_state.slots.keys():
            raise ValueError(f"checkpoint holds optimizer slots {sorted(slots)}; {self.optimizer.kind} needs theirs")
        self.opt_state = OptimizerState(
            source.opt_state.step, {s: {n: a[pick].copy() for n, a in d.items()} for s, d in slots.items()}
        )
        self.epoch, self.step = source.epoch, source.step
        self.data_rng.bit_generator.state = source.epoch_rng_state or source.rng_state
        self._epoch_sums[:] = 0.0
        self._batches, self._batch_pos, self._epoch_rng_state = None, 0, None
        self._refresh_lr()  # the decay at the source's epoch

    def load_weights(self, params: Arrays, state: Arrays | None = None) -> None:
        """Start from given parameters and running statistics (one row per active member, or one row
        for all of them; e.g. a fitted model's); the optimizer, counters and data order stay as
        they are (fresh for a new trainer)."""
        state = {} if state is None else state
        self._check_like(params, self.params, "parameters", rows=(1, self.K))
        self._check_like(state, self.state, "running statistics", rows=(1, self.K))
        self.params = {n: np.broadcast_to(a, self.params[n].shape).astype(self.dtype) for n, a in params.items()}
        self.state = {n: np.broadcast_to(a, self.state[n].shape).astype(self.dtype) for n, a in state.items()}

    def _check_like(self, got: Arrays, want: Arrays, what: str, rows: tuple[int, ...] | None = None) -> None:
        """One-line error unless ``got`` has ``want``'s names and per-member shapes."""
        if got.keys() != want.keys():
            raise ValueError(f"{what}: names {sorted(got)} do not match the architecture's {sorted(want)}")
        for n, a in got.items():
            if a.shape[1:] != want[n].shape[1:] or (rows is not None and a.shape[0] not in rows):
                raise ValueError(f"{what}: {n} has shape {a.shape}, the architecture's is {want[n].shape}")

    def replace_members(self, sources: Sequence[int], targets: Sequence[int], *, hyperparameters: bool = True) -> None:
        """Member ``targets[i]`` becomes an exact copy of member ``sources[i]`` (original indices, both
        active): weights, running statistics, optimizer moments, dropout generator, the running
        epoch's sums and (with ``hyperparameters``) every per-member hyperparameter, so that a step
        of both gives identical results. The optimizer's step counter is the population's, shared
        already. A target keeps its id and its curve; its best-epoch record is dropped (it no longer
        describes its weights). All sources are read before any target is written."""
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources for {len(targets)} targets")
        if len(set(targets)) != len(targets):
            raise ValueError(f"targets {list(targets)} name a member twice")
        src = np.array([self._row(m) for m in sources], dtype=int)
        dst = np.array([self._row(m) for m in targets], dtype=int)
        if self.member_hidden is not None:
            for m_src, m_dst in zip(sources, targets, strict=True):
                if self.member_hidden[m_src] != self.member_hidden[m_dst]:
                    raise ValueError(
                        f"replace_members: member {m_src} has widths {self.member_hidden[m_src]}, "
                        f"member {m_dst} {self.member_hidden[m_dst]}: padded members copy only onto their own widths"
                    )
        if src.size == 0:
            return
        arrays = [
            *self.params.values(),
            *self.state.values(),
            *(a for d in self.opt_state.slots.values() for a in d.values()),
        ]
        if hyperparameters:
            arrays += list(self.hp.values())
        for a in arrays + [self._epoch_sums]:
            a[dst] = a[src]  # fancy indexing reads every source row first: swaps and chains are safe
        states = [self.rngs[j].bit_generator.state for j in src]
        for j, state in zip(dst, states, strict=True):
            self.rngs[j].bit_generator.state = state
        for m in targets:
            hist = self.histories[m]
            hist.best_epoch, hist.best_score = -1, np.inf
            self._best.pop(int(m), None)
        self._refresh_lr()
