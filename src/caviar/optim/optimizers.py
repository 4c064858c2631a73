"""SGD, momentum, Nesterov, RMSprop and Adam as (init, update) pairs over stacked parameters.

Every hyperparameter is a (K,) array (one value per member) reshaped to (K, 1, 1) so it
broadcasts over each member's arrays. Updates are written in place into the parameter arrays
(training touches every parameter every step; fresh arrays would double the memory traffic).
The numerics follow PyTorch (see docs/engine.md): momentum's first buffer is the gradient itself,
RMSprop adds eps after the square root, Adam adds eps outside the root of the bias-corrected v.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from caviar.backend import Backend
from caviar.config import OPTIMIZERS
from caviar.optim import kernels

Arrays = dict[str, np.ndarray]


def _col(v: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A (K,) hyperparameter as (K, 1, 1) in the dtype of the array it updates."""
    return np.asarray(v, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


#: Bytes per block of an update: the six float32 blocks touched (parameter, gradient, two slots,
#: two temporaries) of 128 KiB stay in a core's L2 cache while the ~13 passes of Adam run over them.
BLOCK_BYTES = 128 * 1024


@dataclass
class OptimizerState:
    """Slots (buffers named like the parameters) and the step counter t (from 1 after a step)."""

    step: int = 0
    slots: dict[str, Arrays] = field(default_factory=dict)

    def select(self, keep: np.ndarray) -> OptimizerState:
        """The state of the members ``keep`` (population compaction)."""
        return OptimizerState(self.step, {s: {n: a[keep] for n, a in d.items()} for s, d in self.slots.items()})

    def copy(self) -> OptimizerState:
        return OptimizerState(self.step, {s: {n: a.copy() for n, a in d.items()} for s, d in self.slots.items()})


@dataclass(frozen=True)
class Optimizer:
    """One optimizer kind; ``update`` mutates params in place and returns nothing.

    ``backend``: ``Backend.NUMBA`` runs each array's update as one fused kernel (``fused_plan``),
    ``Backend.NUMPY`` (the default) as numpy passes; the two agree bit for bit.
    """

    kind: str
    backend: Backend = Backend.NUMPY

    def __post_init__(self) -> None:
        if self.kind not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.kind!r}; choose from {', '.join(OPTIMIZERS)}")

    @property
    def slot_names(self) -> tuple[str, ...]:
        return {"sgd": (), "momentum": ("buf",), "nesterov": ("buf",), "rmsprop": ("sq",), "adam": ("m", "v")}[
            self.kind
        ]

    def init(self, params: Arrays) -> OptimizerState:
        return OptimizerState(0, {s: {n: np.zeros_like(p) for n, p in params.items()} for s in self.slot_names})

    def update(
        self,
        params: Arrays,
        grads: Arrays,
        state: OptimizerState,
        lr: np.ndarray,
        hp: dict[str, np.ndarray],
        l2: np.ndarray | None = None,
        decayed: frozenset[str] = frozenset(),
    ) -> None:
        """One step: L2 (``l2`` (K,) times the weight) is added to the gradients of ``decayed``."""
        state.step += 1
        self.apply(params, grads, state.slots, state.step, lr, hp, l2, decayed)

    def apply(
        self,
        params: Arrays,
        grads: Arrays,
        slots: dict[str, Arrays],
        t: int,
        lr: np.ndarray,
        hp: dict[str, np.ndarray],
        l2: np.ndarray | None = None,
        decayed: frozenset[str] = frozenset(),
        overwrite_grads: bool = False,
    ) -> None:
        """Step number ``t`` of ``update`` without touching a step counter, on any rows of members.

        The population's trainer calls it on slices of members from several threads (each slice
        its own rows). With the kernels (``fused_plan``), each array takes one fused pass. Without
        them, each array is updated in cache-sized blocks: the optimizer's passes then run
        over data in L2 instead of streaming whole arrays from memory a dozen times. The blocks cut
        along elements only, so the arithmetic, and every bit of the result, is unchanged.
        ``overwrite_grads`` lets L2 be added into the gradients in place.
        """
        plan = self.fused_plan(params, grads, slots, decayed if l2 is not None else frozenset())
        if plan is not None:  # one fused kernel per array: the same arithmetic, in one pass instead of up to 13
            dtypes = {p.dtype for p in params.values()}
            self.apply_plan(plan, {dtype: self.coefficient_table(lr, hp, t, l2, dtype) for dtype in dtypes}, t)
            return
        coefs: dict[tuple, dict[str, np.ndarray]] = {}  # per (dtype, ndim): built once per step

        def coef(dtype: np.dtype, ndim: int) -> dict[str, np.ndarray]:
            if (dtype, ndim) not in coefs:
                coefs[dtype, ndim] = self._coefficients(lr, hp, dtype, ndim, t, l2)
            return coefs[dtype, ndim]

        for name, p in params.items():
            g = grads[name]
            decay = l2 is not None and name in decayed
            if decay and l2 is not None and not overwrite_grads:
                g = g + _col(l2, p) * p
                decay = False
            member_slots = {s: d[name] for s, d in slots.items()}
            blocks = _blocks(p) if all(a.flags.c_contiguous for a in (p, g, *member_slots.values())) else None
            if blocks is None or len(blocks) == 1:  # one block: the arrays themselves, no views to build
                c = coef(p.dtype, p.ndim)
                if decay:
                    g += c["l2"] * p
                self._step(p, g, member_slots, t, c)
                continue
            c = coef(p.dtype, 2)
            for rows, cols in blocks:
                pb, gb = _block(p, rows, cols, 2), _block(g, rows, cols, 2)
                cb = {n: v[rows] for n, v in c.items()}
                if decay:  # L2 into the gradient block by block: its temporary stays in cache
                    gb += cb["l2"] * pb
                self._step(pb, gb, {s: _block(a, rows, cols, 2) for s, a in member_slots.items()}, t, cb)

    def fused_plan(
        self, params: Arrays, grads: Arrays, slots: dict[str, Arrays], decayed: frozenset[str] = frozenset()
    ) -> list[tuple] | None:
        """What ``apply_plan`` runs: per parameter, its (K, n) views (parameter, gradient, slots) and
        whether L2 applies; None when the kernels do not run (the numpy backend, or an array not
        C-contiguous). A caller that updates the same arrays step after step (the trainer) builds
        the plan once and reuses it."""
        arrays = [a for d in (params, grads, *slots.values()) for a in d.values()]
        if not self.backend.fused or not all(a.flags.c_contiguous for a in arrays):
            return None
        plan = []
        for name, p in params.items():
            K = p.shape[0]
            flat = [a.reshape(K, -1) for a in (p, grads[name], *(slots[s][name] for s in self.slot_names))]
            flat += [flat[0]] * (4 - len(flat))  # unused slot arguments: any array of the right type
            plan.append((*flat, name in decayed))
        return plan

    def coefficient_table(
        self, lr: np.ndarray, hp: dict[str, np.ndarray], t: int, l2: np.ndarray | None, dtype: np.dtype
    ) -> np.ndarray:
        """The per-member numbers of step ``t`` as the kernel takes them: (K, 8) in ``dtype``, columns
        lr (Adam: lr / (1 - beta1^t)), l2 (0 without), then ``kernels.COEF_COLUMNS[kind]``."""
        c = self._coefficients(lr, hp, np.dtype(dtype), 1, t, l2)
        table = np.zeros((len(c["lr"]), 8), dtype)
        table[:, 0] = c["step_size" if self.kind == "adam" else "lr"]
        if l2 is not None:
            table[:, 1] = c["l2"]
        for j, column in enumerate(kernels.COEF_COLUMNS[self.kind]):
            table[:, 2 + j] = c[column]
        return table

    def apply_plan(
        self, plan: list[tuple], tables: dict[np.dtype, np.ndarray] | np.ndarray, t: int, l2: bool = True
    ) -> None:
        """Step ``t`` over a ``fused_plan`` with ``coefficient_table`` rows for its members (one table,
        or one per dtype). L2 is added where the plan says (unless ``l2`` is False), never written
        into the gradients."""
        code = kernels.OPT_CODES[self.kind]
        for p, g, s1, s2, decay in plan:
            table = tables if isinstance(tables, np.ndarray) else tables[p.dtype]
            kernels.optimizer_step_(code, t == 1, decay and l2, p, g, s1, s2, table)

    def _coefficients(
        self,
        lr: np.ndarray,
        hp: dict[str, np.ndarray],
        dtype: np.dtype,
        ndim: int,
        t: int,
        l2: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """The per-member numbers step ``t`` uses, (K, 1, ...) with ``ndim`` axes, in ``dtype``.

        Derived ones (1 - beta, Adam's bias corrections) are computed here once per step rather
        than once per parameter array: the same values, so the same bits.
        """
        names = {
            "sgd": (),
            "momentum": ("momentum",),
            "nesterov": ("momentum",),
            "rmsprop": ("rho", "epsilon"),
            "adam": ("beta1", "beta2", "epsilon"),
        }[self.kind]
        shape = (-1, *([1] * (ndim - 1)))
        c = {n: np.asarray(v, dtype=dtype).reshape(shape) for n, v in [("lr", lr), *((n, hp[n]) for n in names)]}
        if l2 is not None:
            c["l2"] = np.asarray(l2, dtype=dtype).reshape(shape)
        if self.kind == "rmsprop":
            c["1-rho"] = 1.0 - c["rho"]
        elif self.kind == "adam":
            b1, b2 = c["beta1"], c["beta2"]
            c["1-beta1"], c["1-beta2"] = 1.0 - b1, 1.0 - b2
            c["step_size"] = c["lr"] / (1.0 - b1**t)
            c["sqrt_bc2"] = np.sqrt(1.0 - b2**t)
        return c

    def _step(self, p: np.ndarray, g: np.ndarray, slots: Arrays, t: int, c: dict[str, np.ndarray]) -> None:
        """Update ``p`` in place from ``g``; in-place ufuncs with ``out=`` so that each of the
        optimizer's passes allocates nothing (the order of operations is PyTorch's, see module doc).
        """
        lr_k = c["lr"]
        if self.kind == "sgd":
            p -= np.multiply(lr_k, g)
        elif self.kind in ("momentum", "nesterov"):
            mu = c["momentum"]
            buf = slots["buf"]
            if t == 1:
                buf[...] = g
            else:
                buf *= mu
                buf += g
            if self.kind == "nesterov":
                d = np.multiply(mu, buf)
                d += g  # g + mu * buf
            else:
                d = buf.copy()
            d *= lr_k
            p -= d
        elif self.kind == "rmsprop":
            rho = c["rho"]
            sq = slots["sq"]
            tmp = np.multiply(c["1-rho"], g)
            tmp *= g
            sq *= rho
            sq += tmp
            np.sqrt(sq, out=tmp)
            tmp += c["epsilon"]
            d = np.multiply(lr_k, g)
            d /= tmp
            p -= d
        else:
            b1, b2 = c["beta1"], c["beta2"]
            m, v = slots["m"], slots["v"]
            tmp = np.multiply(c["1-beta1"], g)
            m *= b1
            m += tmp
            np.multiply(c["1-beta2"], g, out=tmp)
            tmp *= g
            v *= b2
            v += tmp
            denom = np.sqrt(v, out=tmp)
            denom /= c["sqrt_bc2"]
            denom += c["epsilon"]
            d = np.multiply(c["step_size"], m)
            d /= denom
            p -= d


def _blocks(p: np.ndarray) -> list[tuple[slice, slice]]:
    """(rows, columns) blocks of ``p`` seen as (K, n): whole members while they fit, else column runs."""
    K = p.shape[0]
    n = p.size // max(K, 1)
    block = max(1, BLOCK_BYTES // p.itemsize)
    if K * n <= block:
        return [(slice(None), slice(None))]
    if n >= block:
        return [(slice(k, k + 1), slice(c, c + block)) for k in range(K) for c in range(0, n, block)]
    per = block // n
    return [(slice(k, k + per), slice(None)) for k in range(0, K, per)]


def _block(a: np.ndarray, rows: slice, cols: slice, ndim: int) -> np.ndarray:
    """The block of ``a`` (K, ...) seen as (K, n) (a view: ``a`` is contiguous), or ``a`` itself."""
    return a.reshape(a.shape[0], -1)[rows, cols] if ndim == 2 else a


def make_optimizer(kind: str) -> Optimizer:
    """The optimizer named ``kind`` (one of caviar.config.OPTIMIZERS)."""
    return Optimizer(kind)
