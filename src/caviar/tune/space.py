"""Search spaces: each hyperparameter on its own scale, mapped to and from the unit cube.

Samplers propose points u in [0, 1)^d; a :class:`Space` turns them into values in the user's
variables and back. The scales follow the lecture notes:

- ``linear``: value uniform on [low, high];
- ``log``: r uniform on [log10 low, log10 high], value = 10^r (learning rates, L2, epsilon);
- ``one_minus_log``: r uniform on [log10(1 - high), log10(1 - low)], value = 1 - 10^r, for the
  averaging betas (beta1, beta2, momentum, rho, bn_beta): on [0.9, 0.999] half the draws land
  above 0.99;
- ``int`` and ``int_log``: integers with inclusive bounds, uniform on the linear or log scale;
- ``choice``: one of a list of values (strings, numbers, booleans or lists such as hidden widths).

Every value is monotone non-decreasing in u, so a box in the unit cube is a box in each
parameter's own scale.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from caviar import hparams
from caviar.errors import SpecError
from caviar.hparams import HParam

FLOAT_SCALES = ("linear", "log", "one_minus_log")
INT_SCALES = ("int", "int_log")
SCALES = (*FLOAT_SCALES, *INT_SCALES, "choice")

#: Averaging betas: the notes sample 1 - beta on a log scale (their natural scale in the registry).
EWA_BETAS = tuple(p.name for p in hparams.HPARAMS if p.scale == "one_minus_log")
#: Names tunable besides the config fields: hidden = (width,) * depth; bn_momentum = 1 - bn_beta.
SHORTHANDS = tuple(p.name for p in hparams.SHORTHANDS)
ENTRY_KEYS = ("low", "high", "scale", "choices")


class ScaleWarning(UserWarning):
    """A range whose scale is probably not the one the user wants (e.g. linear over decades)."""


def nearest(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to ``name``, if any is close enough to be a likely typo."""
    hits = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return hits[0] if hits else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a known name is close to ``name``, else ''."""
    hit = nearest(name, known)
    return f" (did you mean '{hit}'?)" if hit else ""


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _clip_unit(u: float) -> float:
    return min(max(float(u), 0.0), 1.0)


def _key(value: Any) -> Any:
    """A hashable key that keeps True apart from 1 and [128, 64] equal to (128, 64)."""
    if isinstance(value, (bool, np.bool_)):
        return ("bool", bool(value))
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(_key(v) for v in value))
    if _is_number(value):
        return ("num", float(value))
    return ("other", value)


def _plain(value: Any) -> Any:
    """JSON-able copy: tuples become lists, numpy scalars become Python scalars."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------------------------
# Parameters


class Param:
    """One hyperparameter: a monotone map between u in [0, 1] and its value."""

    name: str
    scale: str

    def from_unit(self, u: float) -> Any:
        """The value at unit coordinate ``u`` (clipped to [0, 1])."""
        raise NotImplementedError

    def to_unit(self, value: Any) -> float:
        """The unit coordinate of ``value`` (the centre of its cell for discrete params)."""
        raise NotImplementedError

    def as_dict(self) -> dict[str, Any]:
        """The ``[space]`` table entry that rebuilds this param."""
        raise NotImplementedError

    def grid_units(self, points: int) -> np.ndarray:
        """At most ``points`` unit coordinates spread evenly on this param's scale (all choices)."""
        raise NotImplementedError

    def _fail(self, message: str) -> SpecError:
        return SpecError(f"space.{self.name}: {message}")


@dataclass(frozen=True)
class FloatParam(Param):
    """A real hyperparameter on a ``linear``, ``log`` or ``one_minus_log`` scale."""

    name: str
    low: float
    high: float
    scale: str = "linear"

    def __post_init__(self) -> None:
        for key in ("low", "high"):
            value = getattr(self, key)
            if not _is_number(value) or not math.isfinite(value):
                raise self._fail(f"{key} must be a finite number, got {value!r}")
            object.__setattr__(self, key, float(value))
        if self.scale not in FLOAT_SCALES:
            raise self._fail(f"scale '{self.scale}' is not one of {', '.join(FLOAT_SCALES)}")
        self._check_range()
        self._warn_scale()

    def _check_range(self) -> None:
        lo, hi = self.low, self.high
        if self.scale == "log" and lo <= 0:
            raise self._fail(f"scale 'log' needs 0 < low < high, got low={lo!r}")
        if self.scale == "one_minus_log" and lo < 0:
            raise self._fail(f"scale 'one_minus_log' needs 0 <= low < high < 1, got low={lo!r}")
        if self.scale == "one_minus_log" and hi >= 1:
            raise self._fail(f"scale 'one_minus_log' needs 0 <= low < high < 1, got high={hi!r}")
        if lo >= hi:
            raise self._fail(f"needs low < high, got low={lo!r}, high={hi!r}")

    def _warn_scale(self) -> None:
        if self.scale != "linear":
            return
        if self.low > 0 and self.high / self.low > 100:
            decades = math.log10(self.high / self.low)
            warnings.warn(
                f"space.{self.name}: linear range [{self.low:g}, {self.high:g}] spans {decades:.1f} decades,"
                f' so most draws land in the top one; scale = "log" samples each decade equally',
                ScaleWarning,
                stacklevel=3,
            )
        elif self.name in EWA_BETAS and self.high < 1 and (1 - self.low) / (1 - self.high) > 10:
            warnings.warn(
                f"space.{self.name}: linear range [{self.low:g}, {self.high:g}] rarely samples values near 1;"
                f' scale = "one_minus_log" samples each decade of 1 - {self.name} equally',
                ScaleWarning,
                stacklevel=3,
            )

    def _ends(self) -> tuple[float, float]:
        """The sampled variable's ends: value, log10 value, or log10(1 - value) (reversed)."""
        if self.scale == "log":
            return math.log10(self.low), math.log10(self.high)
        if self.scale == "one_minus_log":
            return math.log10(1.0 - self.low), math.log10(1.0 - self.high)
        return self.low, self.high

    def from_unit(self, u: float) -> float:
        a, b = self._ends()
        r = a + _clip_unit(u) * (b - a)
        if self.scale == "log":
            value = 10.0**r
        elif self.scale == "one_minus_log":
            value = 1.0 - 10.0**r
        else:
            value = r
        return float(min(max(value, self.low), self.high))

    def to_unit(self, value: Any) -> float:
        v = float(value)
        a, b = self._ends()
        if self.scale == "log":
            r = math.log10(v) if v > 0 else -math.inf
        elif self.scale == "one_minus_log":
            r = math.log10(1.0 - v) if v < 1 else -math.inf
        else:
            r = v
        return _clip_unit((r - a) / (b - a))

    def as_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "scale": self.scale}

    def grid_units(self, points: int) -> np.ndarray:
        return np.linspace(0.0, 1.0, points) if points > 1 else np.array([0.5])


@dataclass(frozen=True)
class IntParam(Param):
    """An integer hyperparameter, bounds inclusive, uniform on the ``int`` or ``int_log`` scale.

    u is cut into one cell per integer: equal cells for ``int``; cells [log k, log(k + 1)) for
    ``int_log``, so each integer's chance is its share of the log range.
    """

    name: str
    low: int
    high: int
    scale: str = "int"

    def __post_init__(self) -> None:
        for key in ("low", "high"):
            value = getattr(self, key)
            if not _is_number(value) or not float(value).is_integer():
                raise self._fail(f"scale '{self.scale}' needs integer bounds, got {key}={value!r}")
            object.__setattr__(self, key, int(value))
        if self.scale not in INT_SCALES:
            raise self._fail(f"scale '{self.scale}' is not one of {', '.join(INT_SCALES)}")
        if self.scale == "int_log" and self.low < 1:
            raise self._fail(f"scale 'int_log' needs 1 <= low < high, got low={self.low!r}")
        if self.low >= self.high:
            raise self._fail(f"needs low < high, got low={self.low!r}, high={self.high!r}")
        if self.scale == "int" and self.low > 0 and self.high / self.low > 100:
            warnings.warn(
                f"space.{self.name}: linear range [{self.low}, {self.high}] spans more than two decades;"
                f' scale = "int_log" samples each decade equally',
                ScaleWarning,
                stacklevel=3,
            )

    def _ends(self) -> tuple[float, float]:
        if self.scale == "int_log":
            return math.log10(self.low), math.log10(self.high + 1)
        return float(self.low), float(self.high + 1)

    def from_unit(self, u: float) -> int:
        a, b = self._ends()
        r = a + _clip_unit(u) * (b - a)
        value = math.floor(10.0**r if self.scale == "int_log" else r)
        return int(min(max(value, self.low), self.high))

    def to_unit(self, value: Any) -> float:
        k = min(max(int(round(float(value))), self.low), self.high)
        a, b = self._ends()
        mid = (math.log10(k) + math.log10(k + 1)) / 2 if self.scale == "int_log" else k + 0.5
        return _clip_unit((mid - a) / (b - a))

    def as_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "scale": self.scale}

    def grid_units(self, points: int) -> np.ndarray:
        raw = np.linspace(0.0, 1.0, points) if points > 1 else np.array([0.5])
        values = sorted({self.from_unit(u) for u in raw})
        return np.array([self.to_unit(v) for v in values])


@dataclass(frozen=True)
class ChoiceParam(Param):
    """One of a list of values; u in [i/n, (i + 1)/n) picks choice i."""

    name: str
    choices: tuple[Any, ...]
    scale: str = "choice"

    def __post_init__(self) -> None:
        if isinstance(self.choices, str) or not isinstance(self.choices, Sequence) or not self.choices:
            raise self._fail(f"choices must be a non-empty list, got {self.choices!r}")
        object.__setattr__(self, "choices", tuple(_plain(c) for c in self.choices))
        keys = [_key(c) for c in self.choices]
        if len(set(keys)) != len(keys):
            raise self._fail(f"choices must be distinct, got {list(self.choices)!r}")
        object.__setattr__(self, "_index", {k: i for i, k in enumerate(keys)})

    @property
    def n(self) -> int:
        return len(self.choices)

    def index(self, value: Any) -> int:
        """Position of ``value`` among the choices (lists and tuples compare equal)."""
        try:
            return self._index[_key(value)]  # type: ignore[attr-defined]
        except (KeyError, TypeError):
            raise self._fail(f"{value!r} is not one of the choices {list(self.choices)!r}") from None

    def from_unit(self, u: float) -> Any:
        i = min(int(_clip_unit(u) * self.n), self.n - 1)
        return _plain(self.choices[i])

    def to_unit(self, value: Any) -> float:
        return (self.index(value) + 0.5) / self.n

    def as_dict(self) -> dict[str, Any]:
        return {"choices": [_plain(c) for c in self.choices]}

    def grid_units(self, points: int) -> np.ndarray:
        return (np.arange(self.n) + 0.5) / self.n


# --------------------------------------------------------------------------------------------
# Which names are tunable, and what values each accepts


@dataclass(frozen=True)
class Domain:
    """What one tunable name accepts: ``kind`` is float, int, bool, str or hidden; ``scale`` its natural one."""

    kind: str
    allowed: str
    check: Callable[[Any], bool]
    options: tuple[str, ...] = ()
    scale: str = "linear"


_KINDS = {"float": "float", "int": "int", "bool": "bool", "choice": "str", "widths": "hidden"}


def _domain(p: HParam) -> Domain:
    """A registered hyperparameter's domain: its kind, bounds (or choices) and natural scale."""
    if p.kind == "widths":
        return Domain(
            "hidden", p.allowed, lambda v: _is_widths(v) and all(p.bounds.contains(w) for w in v), scale=p.scale
        )
    if p.kind in ("bool", "choice"):
        return Domain(_KINDS[p.kind], p.allowed, p.accepts, tuple(p.choices), p.scale)
    return Domain(_KINDS[p.kind], p.bounds.describe(p.name), p.accepts, scale=p.scale)


def _is_widths(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(_is_number(w) and w >= 1 and w == int(w) for w in value)


#: Every name a ``[space]`` table may tune (the registry's fields and shorthands), with the values it accepts.
TUNABLE: dict[str, Domain] = {p.name: _domain(p) for p in hparams.HPARAMS}


def check_domain(param: Param) -> None:
    """Raise SpecError when ``param`` can produce a value its (tunable) name does not accept."""
    domain = TUNABLE[param.name]
    if domain.kind in ("bool", "str", "hidden") and not isinstance(param, ChoiceParam):
        raise param._fail(f"needs choices = [...] ({domain.allowed}), not scale '{param.scale}'")
    if domain.kind == "int" and isinstance(param, FloatParam):
        raise param._fail(f"is an integer: use scale 'int' or 'int_log', not '{param.scale}'")
    if isinstance(param, ChoiceParam):
        for choice in param.choices:
            if not domain.check(choice):
                raise param._fail(f"choice {choice!r} is not allowed ({domain.allowed})")
        return
    for key in ("low", "high"):
        value = getattr(param, key)
        if not domain.check(value):
            raise param._fail(f"{key}={value!r} is outside the allowed range {domain.allowed}")


# --------------------------------------------------------------------------------------------
# Building params from a [space] table entry


def param_from_dict(name: str, entry: Any, *, tunable: bool = True) -> Param:
    """Build one param from its ``[space]`` entry: ``{low, high, scale}``, ``{choices}`` or a list.

    A bare list is shorthand for ``{choices = [...]}``. For integer names (epochs, depth, ...)
    ``linear``/``log`` mean ``int``/``int_log``. With ``tunable`` the name must be one of
    :data:`TUNABLE` and the range must fit its domain.
    """
    if tunable:
        name = hparams.canonical(name)
    if tunable and name not in TUNABLE:
        raise SpecError(f"space.{name}: not a tunable hyperparameter{did_you_mean(name, TUNABLE)}")
    if isinstance(entry, (list, tuple)):
        entry = {"choices": list(entry)}
    if not isinstance(entry, Mapping):
        raise SpecError(
            f"space.{name}: expected a table like {{low = 0.1, high = 1.0}} or {{choices = [...]}}, got {entry!r}"
        )
    for key in entry:
        if key not in ENTRY_KEYS:
            raise SpecError(f"space.{name}: unknown key '{key}'{did_you_mean(str(key), ENTRY_KEYS)}")
    param = _build(name, dict(entry), TUNABLE[name].kind if tunable else None)
    if tunable:
        check_domain(param)
    return param


def _build(name: str, entry: dict[str, Any], kind: str | None) -> Param:
    scale = entry.get("scale")
    if scale is not None and scale not in SCALES:
        raise SpecError(
            f"space.{name}: unknown scale {scale!r}{did_you_mean(str(scale), SCALES)}; scales are {', '.join(SCALES)}"
        )
    if "choices" in entry:
        if "low" in entry or "high" in entry or scale not in (None, "choice"):
            raise SpecError(f"space.{name}: give either choices or low/high, not both")
        return ChoiceParam(name, entry["choices"])
    if scale == "choice":
        raise SpecError(f"space.{name}: scale 'choice' needs choices = [...]")
    missing = [k for k in ("low", "high") if k not in entry]
    if missing:
        lacking = " and ".join(missing)
        raise SpecError(f"space.{name}: needs low and high (or choices = [...]); missing {lacking}")
    low, high = entry["low"], entry["high"]
    integral = isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool)
    if kind == "int" or (kind is None and scale is None and integral):
        scale = {"linear": "int", "log": "int_log", None: "int"}.get(scale, scale)
    scale = scale or "linear"
    if scale in INT_SCALES:
        return IntParam(name, low, high, scale)
    return FloatParam(name, low, high, scale)


# --------------------------------------------------------------------------------------------
# The space


class Space:
    """An ordered set of params; points of the unit cube [0, 1)^d map to dicts of values."""

    def __init__(self, params: Iterable[Param] | Mapping[str, Param] = ()) -> None:
        items = params.values() if isinstance(params, Mapping) else params
        self.params: dict[str, Param] = {}
        for p in items:
            if p.name in self.params:
                raise SpecError(f"space.{p.name}: defined twice")
            self.params[p.name] = p

    @classmethod
    def from_dict(cls, table: Mapping[str, Any], *, tunable: bool = True) -> Space:
        """Build a space from a ``[space]`` table; ``tunable=False`` accepts any names (tests, demos).

        Dimensions are ordered by name, so a unit point means the same values however the table
        was written or stored (JSON storage sorts keys).
        """
        if not isinstance(table, Mapping):
            raise SpecError(f"space: expected a table of hyperparameters, got {table!r}")
        entries: dict[str, Any] = {}
        given: dict[str, str] = {}
        for key, entry in table.items():
            name = hparams.canonical(str(key)) if tunable else str(key)
            if name in entries:
                raise SpecError(f"space.{key}: same as space.{given[name]}; give one of them")
            entries[name], given[name] = entry, str(key)
        return cls(param_from_dict(name, entries[name], tunable=tunable) for name in sorted(entries))

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """The ``[space]`` table that rebuilds this space (JSON-able)."""
        return {name: p.as_dict() for name, p in self.params.items()}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.params)

    @property
    def dim(self) -> int:
        return len(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def __iter__(self) -> Iterator[Param]:
        return iter(self.params.values())

    def __contains__(self, name: object) -> bool:
        return name in self.params

    def __getitem__(self, name: str) -> Param:
        return self.params[name]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}: {p.as_dict()}" for n, p in self.params.items())
        return f"Space({{{inner}}})"

    def decode(self, u: Sequence[float] | np.ndarray) -> dict[str, Any]:
        """The values at unit point ``u`` (one coordinate per param, in order)."""
        u = np.asarray(u, dtype=float).reshape(-1)
        if u.shape[0] != self.dim:
            raise ValueError(f"expected a point with {self.dim} coordinates, got {u.shape[0]}")
        return {p.name: p.from_unit(x) for p, x in zip(self.params.values(), u, strict=True)}

    def encode(self, values: Mapping[str, Any]) -> np.ndarray:
        """The unit point of ``values`` (every param must be given; extra names are ignored)."""
        missing = [n for n in self.params if n not in values]
        if missing:
            raise SpecError(f"space: no value given for {', '.join(missing)}")
        return np.array([p.to_unit(values[p.name]) for p in self.params.values()], dtype=float)
