"""Samplers: they propose points of the unit cube [0, 1)^d; the :class:`~caviar.tune.space.Space`
turns each point into hyperparameter values on their own scales.

Every sampler is deterministic. The non-adaptive ones (random, grid, Sobol) give trial number n
the same point whatever order, batch or process asks for it. Coarse-to-fine draws trial n from
(seed, n) inside a box that depends only on the *set* of earlier rounds' results; TPE depends on
the seed, the trial numbers asked and the history in the order given.

The protocol is one method::

    sampler.propose(numbers, history) -> [u for each number]

where ``history`` is a sequence of :class:`Observation` (trial number, its point, the objective to
MAXIMIZE or None when the trial failed, and its round). Each sampler also says how a study runs it:
``sampler.round_numbers(trials)`` lists the trial numbers of each round (a round is proposed once
every earlier round has finished: one round for random, grid and Sobol, ``rounds`` for
coarse-to-fine, batches of :attr:`TPESampler.batch` for TPE), ``sampler.adaptive`` whether it
looks at the history at all, and ``sampler.round_box(r, history)`` the region round r draws from,
if it has one, to store with the study.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from caviar.errors import SpecError
from caviar.tune.space import ChoiceParam, Space, did_you_mean

# Stream constants for SeedSequence spawn keys, so samplers never share random numbers with
# the trials' own streams (caviar.seeding) or with each other.
_RANDOM_STREAM = 0x5A3D1E
_GRID_STREAM = 0x6121D
_SOBOL_STREAM = 0x50B01
_TPE_STREAM = 0x7BE

STRATEGIES = ("random", "grid", "sobol", "coarse_to_fine", "tpe")


@dataclass(frozen=True)
class Observation:
    """A finished trial as samplers see it: ``value`` is the objective to MAXIMIZE (None: failed)."""

    number: int
    u: np.ndarray
    value: float | None
    round: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the trial gave a finite objective."""
        return self.value is not None and math.isfinite(float(self.value))


def trial_rng(seed: int, number: int, stream: int = _RANDOM_STREAM) -> np.random.Generator:
    """The generator of trial ``number``: a function of (seed, number) alone."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(stream, int(number))))


def round_of(number: int, total_trials: int, rounds: int) -> int:
    """The round of trial ``number`` when ``total_trials`` are split evenly over ``rounds``.

    Trials [0, total/rounds) are round 0, and so on; numbers past the budget join the last round.
    """
    if total_trials < 1 or rounds < 1:
        raise ValueError("total_trials and rounds must be at least 1")
    return min(rounds - 1, int(number) * rounds // total_trials)


class Sampler:
    """Base class: proposes unit-cube points for trial numbers, given the finished trials."""

    name: ClassVar[str] = ""
    #: Adaptive samplers look at the history; the others ignore it.
    adaptive: ClassVar[bool] = False

    def __init__(self, space: Space, seed: int = 0) -> None:
        self.space = space
        self.seed = int(seed)

    @property
    def dim(self) -> int:
        return self.space.dim

    def round_numbers(self, trials: int) -> list[list[int]]:
        """The trial numbers of each round, in order, for a budget of ``trials``.

        A round's trials are proposed once every trial of the earlier rounds has finished; a
        sampler that ignores the history has a single round (no barrier between trials).
        """
        return [list(range(trials))] if trials > 0 else []

    def round_box(self, rnd: int, history: Sequence[Observation] = ()) -> Box | None:
        """The region round ``rnd`` draws from, to store with the study (None: no such region)."""
        return None

    def propose(self, numbers: Sequence[int], history: Sequence[Observation] = ()) -> list[np.ndarray]:
        """One unit-cube point per trial number."""
        return [self.point(n) for n in numbers]

    def point(self, number: int) -> np.ndarray:
        """The point of trial ``number`` (non-adaptive samplers)."""
        raise NotImplementedError

    def ask(self, numbers: Sequence[int], history: Sequence[Observation] = ()) -> list[dict[str, Any]]:
        """Like :meth:`propose`, decoded into hyperparameter values."""
        return [self.space.decode(u) for u in self.propose(numbers, history)]


class RandomSampler(Sampler):
    """Uniform in the unit cube, i.e. uniform on each parameter's own scale."""

    name = "random"

    def point(self, number: int) -> np.ndarray:
        return trial_rng(self.seed, number).random(self.dim)


class GridSampler(Sampler):
    """A grid: ``points_per_axis`` evenly spaced on each numeric scale, every choice of a choice.

    With ``points_per_axis`` unset, the smallest count (at least 2) whose grid holds ``trials``
    points is used (3 when ``trials`` is unset too). Trial n takes grid point perm[n mod size],
    with a fresh seeded permutation per pass (``shuffle=False``: row-major order), so a budget
    smaller than the grid still spreads over it.
    """

    name = "grid"

    def __init__(
        self,
        space: Space,
        seed: int = 0,
        points_per_axis: int | None = None,
        trials: int | None = None,
        shuffle: bool = True,
    ) -> None:
        super().__init__(space, seed)
        if points_per_axis is not None and points_per_axis < 1:
            raise SpecError(f"search.points_per_axis must be at least 1, got {points_per_axis}")
        self.points_per_axis = points_per_axis or self._fit_points(trials)
        self.axes = [p.grid_units(self.points_per_axis) for p in space]
        self.shape = tuple(len(a) for a in self.axes)
        self.size = int(np.prod(self.shape)) if self.shape else 1
        self.shuffle = shuffle
        self._perms: dict[int, np.ndarray] = {}

    def _fit_points(self, trials: int | None) -> int:
        if trials is None:
            return 3
        previous = -1
        for m in range(2, 10_000):
            size = math.prod(len(p.grid_units(m)) for p in self.space)
            if size >= trials or size == previous:
                return m
            previous = size
        return 10_000

    def _index(self, number: int) -> int:
        passes, k = divmod(int(number), self.size)
        if not self.shuffle:
            return k
        if self.size > 1 << 20:  # too big to permute: a seeded affine bijection of Z_size
            rng = trial_rng(self.seed, passes, _GRID_STREAM)
            a = int(rng.integers(1, self.size))
            while math.gcd(a, self.size) != 1:
                a += 1
            return (a * k + int(rng.integers(self.size))) % self.size
        if passes not in self._perms:
            self._perms[passes] = trial_rng(self.seed, passes, _GRID_STREAM).permutation(self.size)
        return int(self._perms[passes][k])

    def point(self, number: int) -> np.ndarray:
        if not self.axes:
            return np.empty(0)
        coords = np.unravel_index(self._index(number), self.shape)
        return np.array([axis[i] for axis, i in zip(self.axes, coords, strict=True)], dtype=float)


class SobolSampler(Sampler):
    """A scrambled Sobol' sequence (scipy.stats.qmc): trial n takes its nth point.

    Points come in powers of two from one seeded engine, so the first n points are the same
    whatever count is generated; budgets that are powers of two are the balanced ones.
    """

    name = "sobol"

    def __init__(self, space: Space, seed: int = 0) -> None:
        super().__init__(space, seed)
        self._points = np.empty((0, self.dim))

    def _generate(self, count: int) -> None:
        from scipy.stats import qmc

        m = max(0, math.ceil(math.log2(max(count, 1))))
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(_SOBOL_STREAM,)))
        try:
            engine = qmc.Sobol(self.dim, scramble=True, rng=rng)
        except TypeError:  # scipy < 1.15 names it seed
            engine = qmc.Sobol(self.dim, scramble=True, seed=rng)
        self._points = engine.random_base2(m)

    def point(self, number: int) -> np.ndarray:
        if self.dim == 0:
            return np.empty(0)
        if number >= len(self._points):
            self._generate(int(number) + 1)
        return self._points[int(number)].copy()


@dataclass(frozen=True)
class Box:
    """One coarse-to-fine round's region, in unit coordinates and in the user's variables.

    ``lower``/``upper`` are unit arrays (for a choice param: the span of its allowed cells);
    ``low``/``high`` decode them per numeric param; ``choices`` lists the allowed values of
    each choice param (``allowed`` their indices).
    """

    round: int
    lower: np.ndarray
    upper: np.ndarray
    allowed: dict[str, tuple[int, ...]] = field(default_factory=dict)
    low: dict[str, Any] = field(default_factory=dict)
    high: dict[str, Any] = field(default_factory=dict)
    choices: dict[str, list[Any]] = field(default_factory=dict)

    @classmethod
    def build(
        cls, space: Space, rnd: int, lower: np.ndarray, upper: np.ndarray, allowed: dict[str, tuple[int, ...]]
    ) -> Box:
        """A box with its decoded bounds filled in from ``space``."""
        low, high, choices = {}, {}, {}
        for i, p in enumerate(space):
            if isinstance(p, ChoiceParam):
                choices[p.name] = [p.choices[k] for k in allowed[p.name]]
            else:
                low[p.name], high[p.name] = p.from_unit(lower[i]), p.from_unit(upper[i])
        return cls(rnd, lower, upper, allowed, low, high, choices)

    @property
    def widths(self) -> np.ndarray:
        return self.upper - self.lower

    @property
    def volume(self) -> float:
        """Share of the unit cube inside the box (a choice param counts the span of its allowed cells)."""
        return float(np.prod(self.widths)) if len(self.widths) else 1.0

    def contains(self, u: np.ndarray, tol: float = 1e-9) -> bool:
        """Whether unit point ``u`` lies in the box."""
        u = np.asarray(u, dtype=float)
        return bool(np.all(u >= self.lower - tol) and np.all(u <= self.upper + tol))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, to store with the study and draw later."""
        return {
            "round": self.round,
            "lower": [float(x) for x in self.lower],
            "upper": [float(x) for x in self.upper],
            "low": dict(self.low),
            "high": dict(self.high),
            "choices": {k: list(v) for k, v in self.choices.items()},
        }


class CoarseToFineSampler(Sampler):
    """Rounds of random search, each inside the box of the best trials so far.

    Round 0 samples the whole cube (its points equal :class:`RandomSampler`'s for the same seed).
    Round r > 0 samples inside the bounding box, in unit coordinates (each param's own scale), of
    the top ``top_fraction`` of the finished trials of rounds < r (at least ``min_top`` of them),
    widened by ``margin`` times its width on each side, clipped to [0, 1], and at least
    ``min_width`` wide. Where the best trial sits within ``edge_tol`` (fraction of the width) of
    the previous round's box edge, the box extends past that edge by the previous width instead
    of shrinking. Choice params keep only the choices seen among the top trials.
    """

    name = "coarse_to_fine"
    adaptive = True

    def __init__(
        self,
        space: Space,
        seed: int = 0,
        trials: int = 32,
        rounds: int = 3,
        top_fraction: float = 0.25,
        margin: float = 0.1,
        min_width: float = 0.02,
        edge_tol: float = 0.1,
        min_top: int = 2,
    ) -> None:
        super().__init__(space, seed)
        if not 1 <= rounds <= trials:
            raise SpecError(f"search.rounds must be between 1 and trials ({trials}), got {rounds}")
        if not 0 < top_fraction <= 1:
            raise SpecError(f"search.top_fraction must be in (0, 1], got {top_fraction}")
        if margin < 0 or not 0 <= min_width <= 1:
            raise SpecError(f"search.margin must be >= 0 and min_width in [0, 1], got {margin}, {min_width}")
        self.trials, self._rounds = int(trials), int(rounds)
        self.top_fraction, self.margin, self.min_width = top_fraction, margin, min_width
        self.edge_tol, self.min_top = edge_tol, max(1, int(min_top))
        self._choice = np.array([isinstance(p, ChoiceParam) for p in space], dtype=bool)

    @property
    def rounds(self) -> int:
        """How many rounds the trials are split into."""
        return self._rounds

    def round_of(self, number: int, total_trials: int | None = None) -> int:
        """The round of trial ``number`` (of ``total_trials``, by default the sampler's budget)."""
        return round_of(number, total_trials or self.trials, self._rounds)

    def round_numbers(self, trials: int) -> list[list[int]]:
        """``rounds`` rounds, the trials split evenly over them in number order."""
        rounds: list[list[int]] = [[] for _ in range(self._rounds)]
        for n in range(trials):
            rounds[self.round_of(n)].append(n)
        return [r for r in rounds if r]

    def round_box(self, rnd: int, history: Sequence[Observation] = ()) -> Box:
        return self.box_for_round(rnd, history)

    def _obs_round(self, obs: Observation) -> int:
        return obs.round if obs.round is not None else self.round_of(obs.number)

    def full_box(self) -> Box:
        """Round 0's box: the whole cube, every choice."""
        allowed = {p.name: tuple(range(p.n)) for p in self.space if isinstance(p, ChoiceParam)}
        return Box.build(self.space, 0, np.zeros(self.dim), np.ones(self.dim), allowed)

    def box_for_round(self, rnd: int, history: Sequence[Observation] = ()) -> Box:
        """The box trials of round ``rnd`` are drawn from, given the finished trials."""
        box = self.full_box()
        for r in range(1, int(rnd) + 1):
            done = [o for o in history if o.ok and self._obs_round(o) < r]
            box = self._next_box(box, done, r)
        return box

    def boxes(self, history: Sequence[Observation] = ()) -> list[Box]:
        """Every round's box (the later ones as far as the history allows)."""
        return [self.box_for_round(r, history) for r in range(self._rounds)]

    def _top(self, done: Sequence[Observation]) -> np.ndarray:
        ranked = sorted(done, key=lambda o: (-float(o.value), o.number))  # type: ignore[arg-type]
        count = max(self.min_top, math.ceil(self.top_fraction * len(ranked)))
        return np.array([np.asarray(o.u, dtype=float) for o in ranked[:count]]).reshape(-1, self.dim)

    def _next_box(self, prev: Box, done: Sequence[Observation], rnd: int) -> Box:
        if len(done) < self.min_top or self.dim == 0:
            return Box.build(self.space, rnd, prev.lower, prev.upper, prev.allowed)
        top = self._top(done)
        lo, hi = top.min(axis=0), top.max(axis=0)
        pad = self.margin * (hi - lo)
        lo, hi = lo - pad, hi + pad
        lo, hi = self._grow_at_edges(prev, top[0], lo, hi)
        lo, hi = self._at_least_min_width(np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0))
        allowed = self._allowed_choices(top)
        for i, p in enumerate(self.space):
            if isinstance(p, ChoiceParam):
                lo[i], hi[i] = min(allowed[p.name]) / p.n, (max(allowed[p.name]) + 1) / p.n
        return Box.build(self.space, rnd, lo, hi, allowed)

    def _grow_at_edges(
        self, prev: Box, best: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        width = prev.upper - prev.lower
        at_low = best <= prev.lower + self.edge_tol * width
        at_high = best >= prev.upper - self.edge_tol * width
        lo = np.where(at_low & ~self._choice, np.minimum(lo, prev.lower - width), lo)
        hi = np.where(at_high & ~self._choice, np.maximum(hi, prev.upper + width), hi)
        return lo, hi

    def _at_least_min_width(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        narrow = (hi - lo) < self.min_width
        centre = (lo + hi) / 2
        lo = np.where(narrow, centre - self.min_width / 2, lo)
        hi = np.where(narrow, centre + self.min_width / 2, hi)
        shift = np.where(lo < 0, -lo, 0.0) + np.where(hi > 1, 1 - hi, 0.0)
        return np.clip(lo + shift, 0.0, 1.0), np.clip(hi + shift, 0.0, 1.0)

    def _allowed_choices(self, top: np.ndarray) -> dict[str, tuple[int, ...]]:
        allowed = {}
        for i, p in enumerate(self.space):
            if isinstance(p, ChoiceParam):
                allowed[p.name] = tuple(sorted({min(int(u * p.n), p.n - 1) for u in top[:, i]}))
        return allowed

    def sample_in(self, box: Box, number: int) -> np.ndarray:
        """Trial ``number``'s point inside ``box``: uniform, from (seed, number) alone."""
        v = trial_rng(self.seed, number).random(self.dim)
        u = box.lower + v * (box.upper - box.lower)
        for i, p in enumerate(self.space):
            if isinstance(p, ChoiceParam):
                allowed = box.allowed[p.name]
                k = allowed[min(int(v[i] * len(allowed)), len(allowed) - 1)]
                u[i] = (k + 0.5) / p.n
        return u

    def propose(self, numbers: Sequence[int], history: Sequence[Observation] = ()) -> list[np.ndarray]:
        boxes: dict[int, Box] = {}
        points = []
        for n in numbers:
            r = self.round_of(n)
            if r not in boxes:
                boxes[r] = self.box_for_round(r, history)
            points.append(self.sample_in(boxes[r], n))
        return points


class TPESampler(Sampler):
    """Optuna's Tree-structured Parzen Estimator over the unit cube (needs ``caviar[tpe]``).

    Each call builds an in-memory Optuna study, tells it the history (in the order given) and asks
    one point per trial number; the Optuna seed comes from (seed, first number asked), so the
    same history and numbers give the same points. Numeric params are FloatDistribution(0, 1);
    choice params are categorical over their indices.
    """

    name = "tpe"
    adaptive = True
    #: Trials asked per round: each batch is told every earlier batch's results.
    batch: ClassVar[int] = 8

    def __init__(self, space: Space, seed: int = 0, n_startup_trials: int = 10) -> None:
        super().__init__(space, seed)
        self.n_startup_trials = int(n_startup_trials)
        self._optuna = _import_optuna()

    def round_numbers(self, trials: int) -> list[list[int]]:
        """Batches of :attr:`batch` trials, in number order."""
        return [list(range(i, min(trials, i + self.batch))) for i in range(0, trials, self.batch)]

    def _distributions(self) -> dict[str, Any]:
        dist = self._optuna.distributions
        return {
            p.name: dist.CategoricalDistribution(tuple(range(p.n)))
            if isinstance(p, ChoiceParam)
            else dist.FloatDistribution(0.0, 1.0)
            for p in self.space
        }

    def _to_params(self, u: np.ndarray) -> dict[str, Any]:
        return {
            p.name: min(int(x * p.n), p.n - 1) if isinstance(p, ChoiceParam) else float(min(max(x, 0.0), 1.0))
            for p, x in zip(self.space, np.asarray(u, dtype=float), strict=True)
        }

    def _from_params(self, params: dict[str, Any]) -> np.ndarray:
        return np.array(
            [(params[p.name] + 0.5) / p.n if isinstance(p, ChoiceParam) else float(params[p.name]) for p in self.space],
            dtype=float,
        )

    def propose(self, numbers: Sequence[int], history: Sequence[Observation] = ()) -> list[np.ndarray]:
        if not numbers:
            return []
        if self.dim == 0:
            return [np.empty(0) for _ in numbers]
        optuna = self._optuna
        sequence = np.random.SeedSequence(self.seed, spawn_key=(_TPE_STREAM, int(numbers[0])))
        seed = int(sequence.generate_state(1)[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials, constant_liar=True)
            study = optuna.create_study(direction="maximize", sampler=sampler)
            dists = self._distributions()
            for obs in history:
                if obs.ok and obs.value is not None:
                    trial = optuna.trial.create_trial(
                        params=self._to_params(obs.u), distributions=dists, value=float(obs.value)
                    )
                    study.add_trial(trial)
            return [self._from_params(study.ask(dists).params) for _ in numbers]


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise SpecError("search.strategy 'tpe' needs optuna: pip install 'caviar[tpe]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


SAMPLERS: dict[str, type[Sampler]] = {
    "random": RandomSampler,
    "grid": GridSampler,
    "sobol": SobolSampler,
    "coarse_to_fine": CoarseToFineSampler,
    "tpe": TPESampler,
}


def _options_of(cls: type[Sampler]) -> set[str]:
    params = inspect.signature(cls.__init__).parameters
    return {name for name in params if name not in ("self", "space", "seed")}


def make_sampler(strategy: str, space: Space, seed: int = 0, **options: Any) -> Sampler:
    """Build the sampler of ``strategy`` (random, grid, sobol, coarse_to_fine, tpe).

    ``options`` may hold the settings of any strategy (trials, rounds, top_fraction, margin,
    min_width, points_per_axis, ...); each sampler takes those it knows, and None means default.
    An option no sampler knows is an error.
    """
    if strategy not in SAMPLERS:
        raise SpecError(
            f"search.strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}"
            f"{did_you_mean(str(strategy), STRATEGIES)}"
        )
    known = set().union(*(_options_of(c) for c in SAMPLERS.values()))
    for name in options:
        if name not in known:
            raise SpecError(f"unknown sampler option '{name}'{did_you_mean(name, known)}")
    cls = SAMPLERS[strategy]
    mine = _options_of(cls)
    return cls(space, seed, **{k: v for k, v in options.items() if k in mine and v is not None})
