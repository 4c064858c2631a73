"""The hyperparameter registry: every model and training field declared once, with all its rules.

Each :class:`HParam` says a field's kind, default, bounds or choices, whether it may differ between the
members of one population (*per-member*) or changes a shape or the code path (*static*), which part of
the engine owns it (the model or the training, which optimizers or layers read it), its aliases,
whether panda may change it while a model trains, its natural search scale and how panda's fork
perturbs it. :data:`RULES` holds the rules that tie two fields together.

Everything else derives from here instead of restating it: ModelConfig and TrainConfig (caviar.config),
the checks (caviar.validation), the spec's ``[model]``/``[training]`` tables and the tunable names of
``[space]`` (caviar.tune), panda's controls (server and page), the Classifier's parameter constraints
and ``caviar train``'s options. tests/test_hparams.py walks the registry through every one of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Literal

import numpy as np

from caviar.errors import CaviarError

Kind = Literal["float", "int", "bool", "choice", "widths"]
Owner = Literal["model", "train"]
#: The search scales of caviar.tune.space (``choice`` for non-numeric kinds).
Scale = Literal["linear", "log", "one_minus_log", "int", "int_log", "choice"]
ForkScale = Literal["log", "one_minus_log"]

#: The widest hidden layer (a sanity bound; whether the weights fit in memory is checked against the data
#: by caviar.data.checks.check_weights_fit).
MAX_WIDTH = 1 << 20

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam")
DECAYS = ("none", "inverse_time", "exponential", "step", "cosine")


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


@dataclass(frozen=True)
class Bounds:
    """An interval of allowed numbers; ``None`` is unbounded, ``*_open`` excludes that end."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, v: float) -> bool:
        """Whether ``v`` lies in the interval."""
        ok_low = self.low is None or (v > self.low if self.low_open else v >= self.low)
        ok_high = self.high is None or (v < self.high if self.high_open else v <= self.high)
        return ok_low and ok_high

    def limits(self) -> dict[str, Any]:
        """The interval as ``gt``/``ge``/``lt``/``le`` keywords (pydantic's Field and annotated-types)."""
        out: dict[str, Any] = {}
        if self.low is not None:
            out["gt" if self.low_open else "ge"] = self.low
        if self.high is not None:
            out["lt" if self.high_open else "le"] = self.high
        return out

    def describe(self, name: str) -> str:
        """The interval as an inequality on ``name``: ``0 <= dropout < 1``, ``learning_rate > 0``."""
        if self.low is not None and self.high is None:
            return f"{name} {'>' if self.low_open else '>='} {_fmt(self.low)}"
        left = "" if self.low is None else f"{_fmt(self.low)} {'<' if self.low_open else '<='} "
        right = "" if self.high is None else f" {'<' if self.high_open else '<='} {_fmt(self.high)}"
        return f"{left}{name}{right}"

    def words(self) -> str:
        """The interval in words: ``> 0``, ``in [0, 1)``, ``>= 1``."""
        if self.low is None and self.high is None:
            return ""
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_fmt(self.low)}"  # type: ignore[arg-type]
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {_fmt(self.high)}"
        return f"in {'(' if self.low_open else '['}{_fmt(self.low)}, {_fmt(self.high)}{')' if self.high_open else ']'}"


def is_number(value: Any) -> bool:
    """A real number that is not a boolean (``True`` is never 1 here)."""
    return isinstance(value, Real) and not isinstance(value, (bool, np.bool_))


def is_bool(value: Any) -> bool:
    """A boolean (Python's or numpy's); 0 and 1 are not booleans."""
    return isinstance(value, (bool, np.bool_))


def is_integer(value: Any) -> bool:
    """An integer, or a float with no fractional part (TOML, JSON and the command line give those)."""
    return is_number(value) and math.isfinite(value) and float(value).is_integer()


@dataclass(frozen=True)
class HParam:
    """One hyperparameter and every rule about it."""

    name: str
    kind: Kind
    default: Any
    help: str
    owner: Owner
    bounds: Bounds = Bounds()
    choices: tuple[Any, ...] = ()
    #: May differ between the members of one population ((K,) arrays); else static: a shape or code path.
    per_member: bool = False
    #: What makes it matter: the optimizers, decay kinds, layers or switches that read it (empty: always).
    used_by: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    #: panda may change it while the model trains.
    live: bool = False
    #: The scale a search should sample it on.
    scale: Scale = "linear"
    #: How panda's fork spreads variants around the current value (None: a fork cannot vary it).
    fork_scale: ForkScale | None = None
    #: For a shorthand (tunable, not a config field): the config field it sets. None for config fields.
    sets: str | None = None
    #: A shorthand that ``[model]``/``[training]`` may also fix (depth, width), not only ``[space]``.
    fixable: bool = True

    @property
    def is_field(self) -> bool:
        """A ModelConfig/TrainConfig field (not a shorthand such as depth or bn_beta)."""
        return self.sets is None

    @property
    def section(self) -> str:
        """The spec table that holds it: ``model`` or ``training``."""
        return "model" if self.owner == "model" else "training"

    @property
    def allowed(self) -> str:
        """What the field accepts, in words (the tail of every refusal)."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return f"one of {', '.join(map(str, self.choices))}"
        if self.kind == "widths":
            return f"a list of integer widths {self.bounds.words()} (may be empty)"
        noun = "an integer" if self.kind == "int" else "a finite number"
        words = self.bounds.words()
        return f"{noun} {words}" if words else noun

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is one this field may take."""
        if self.kind == "bool":
            return is_bool(value)
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        if self.kind == "widths":
            return isinstance(value, (tuple, list)) and all(
                isinstance(w, Integral) and not is_bool(w) and self.bounds.contains(int(w)) for w in value
            )
        if self.kind == "int":
            return is_integer(value) and self.bounds.contains(value)
        return is_number(value) and math.isfinite(value) and self.bounds.contains(value)

    def check(self, value: Any, where: str = "") -> Any:
        """``value`` (an integral float as an int for integer fields), or a one-line CaviarError."""
        if not self.accepts(value):
            raise CaviarError(f"{where}{self.name}: {value!r} is not allowed; expected {self.allowed}")
        if self.kind == "int":
            return int(value)
        return value


@dataclass(frozen=True)
class Rule:
    """A rule between fields: ``test(values)`` says what ``keys[0]`` must be (a phrase), or None when kept.

    ``keys[0]`` is the field a refusal names, as ``"<key>: <its value> <phrase>"``; the other keys are
    the fields it depends on.
    """

    keys: tuple[str, ...]
    test: Callable[[Mapping[str, Any]], str | None]


def _decay_below_one(v: Mapping[str, Any]) -> str | None:
    if v["decay"] in ("exponential", "step") and not v["lr_decay"] < 1:
        return f"must be < 1 for {v['decay']} decay (it multiplies the rate by 1 - lr_decay)"
    return None


def _batchnorm_batches(v: Mapping[str, Any]) -> str | None:
    if v["batchnorm"] and v["batch_size"] < 2:
        return "must be >= 2 with batchnorm = true (batch norm needs at least 2 samples per batch)"
    return None


#: The rules that tie fields together, declared once.
RULES: tuple[Rule, ...] = (
    Rule(("lr_decay", "decay"), _decay_below_one),
    Rule(("batch_size", "batchnorm"), _batchnorm_batches),
)

_UNIT = Bounds(0, 1, False, True)  # [0, 1): the averaging betas, dropout
_POSITIVE = Bounds(0, None, True, False)  # > 0
_NONNEG = Bounds(0, None, False, False)  # >= 0


def _at_least(n: int) -> Bounds:
    return Bounds(n, None, False, False)


_WIDTH = Bounds(1, MAX_WIDTH)  # a hidden layer's width


#: Every hyperparameter, in ModelConfig's then TrainConfig's field order, then the shorthands.
HPARAMS: tuple[HParam, ...] = (
    # ---- the model (ModelConfig)
    HParam("hidden", "widths", (128, 64), "widths of the hidden layers", "model", _WIDTH, scale="choice"),
    HParam(
        "activation",
        "choice",
        "relu",
        "activation after each hidden layer",
        "model",
        choices=ACTIVATIONS,
        scale="choice",
    ),
    HParam("batchnorm", "bool", True, "batch norm before each activation", "model", scale="choice"),
    HParam(
        "dropout",
        "float",
        0.0,
        "dropout rate after each activation",
        "model",
        _UNIT,
        per_member=True,
        live=True,
    ),
    # ---- the training (TrainConfig)
    HParam("optimizer", "choice", "adam", "the update rule", "train", choices=OPTIMIZERS, scale="choice"),
    HParam(
        "learning_rate",
        "float",
        1e-3,
        "step size of every update",
        "train",
        _POSITIVE,
        per_member=True,
        aliases=("lr",),
        live=True,
        scale="log",
        fork_scale="log",
    ),
    HParam(
        "momentum",
        "float",
        0.9,
        "momentum/nesterov's averaging beta",
        "train",
        _UNIT,
        per_member=True,
        used_by=("momentum", "nesterov"),
        live=True,
        scale="one_minus_log",
        fork_scale="one_minus_log",
    ),
    HParam(
        "beta1",
        "float",
        0.9,
        "Adam's averaging beta of the gradients",
        "train",
        _UNIT,
        per_member=True,
        used_by=("adam",),
        live=True,
        scale="one_minus_log",
        fork_scale="one_minus_log",
    ),
    HParam(
        "beta2",
        "float",
        0.999,
        "Adam's averaging beta of the squared gradients",
        "train",
        _UNIT,
        per_member=True,
        used_by=("adam",),
        live=True,
        scale="one_minus_log",
        fork_scale="one_minus_log",
    ),
    HParam(
        "rho",
        "float",
        0.99,
        "RMSprop's averaging beta of the squared gradients",
        "train",
        _UNIT,
        per_member=True,
        used_by=("rmsprop",),
        live=True,
        scale="one_minus_log",
        fork_scale="one_minus_log",
    ),
    HParam(
        "epsilon",
        "float",
        1e-8,
        "added to RMSprop's and Adam's denominators",
        "train",
        _POSITIVE,
        per_member=True,
        used_by=("rmsprop", "adam"),
        aliases=("eps",),
        live=True,
        scale="log",
        fork_scale="log",
    ),
    HParam(
        "l2",
        "float",
        0.0,
        "L2 penalty on the weights",
        "train",
        _NONNEG,
        per_member=True,
        aliases=("weight_decay",),
        live=True,
        scale="log",
        fork_scale="log",
    ),
    HParam(
        "decay", "choice", "none", "how the learning rate decays over epochs", "train", choices=DECAYS, scale="choice"
    ),
    HParam(
        "lr_decay",
        "float",
        0.0,
        "the decay rate d of the learning-rate schedule",
        "train",
        _NONNEG,
        per_member=True,
        used_by=("inverse_time", "exponential", "step"),
        live=True,
    ),
    HParam(
        "decay_every", "int", 10, "epochs per step of step decay", "train", _at_least(1), used_by=("step",), scale="int"
    ),
    HParam("batch_size", "int", 64, "samples per mini-batch", "train", _at_least(1), scale="int_log"),
    HParam("epochs", "int", 30, "passes over the training data", "train", _at_least(1), scale="int"),
    HParam(
        "bn_momentum",
        "float",
        0.1,
        "batch norm's running-statistics momentum (PyTorch's; the notes' beta is 1 - bn_momentum)",
        "train",
        Bounds(0, 1, True, False),
        per_member=True,
        used_by=("batchnorm",),
        aliases=("bn",),
        live=True,
        scale="log",
    ),
    HParam("early_stopping", "bool", False, "stop a member when validation stops improving", "train", scale="choice"),
    HParam(
        "patience",
        "int",
        10,
        "epochs without improvement before early stopping",
        "train",
        _at_least(1),
        used_by=("early_stopping",),
        scale="int",
    ),
    HParam(
        "min_delta",
        "float",
        0.0,
        "smallest improvement that resets the patience",
        "train",
        _NONNEG,
        used_by=("early_stopping",),
    ),
    # ---- shorthands: tunable names that set a config field
    HParam(
        "depth", "int", 2, "shorthand: hidden = (width,) * depth", "model", _at_least(0), scale="int", sets="hidden"
    ),
    HParam(
        "width",
        "int",
        128,
        "shorthand: hidden = (width,) * depth",
        "model",
        _WIDTH,
        scale="int_log",
        sets="hidden",
    ),
    HParam(
        "bn_beta",
        "float",
        0.9,
        "the notes' batch-norm averaging beta: bn_momentum = 1 - bn_beta",
        "train",
        _UNIT,
        used_by=("batchnorm",),
        scale="one_minus_log",
        sets="bn_momentum",
        fixable=False,
    ),
)

#: Every hyperparameter by name.
BY_NAME: dict[str, HParam] = {p.name: p for p in HPARAMS}
#: Each alias -> the name it stands for.
ALIASES: dict[str, str] = {a: p.name for p in HPARAMS for a in p.aliases}


def fields_of(owner: Owner) -> tuple[HParam, ...]:
    """The config fields of ModelConfig (``model``) or TrainConfig (``train``), in order."""
    return tuple(p for p in HPARAMS if p.owner == owner and p.is_field)


MODEL: tuple[HParam, ...] = fields_of("model")
TRAIN: tuple[HParam, ...] = fields_of("train")
FIELDS: tuple[HParam, ...] = MODEL + TRAIN
SHORTHANDS: tuple[HParam, ...] = tuple(p for p in HPARAMS if not p.is_field)
#: Per-member fields, training's then the model's (the order the trainer stacks them in).
PER_MEMBER: tuple[str, ...] = tuple(p.name for p in TRAIN + MODEL if p.per_member)
#: Fields panda may change while a model trains.
LIVE: tuple[str, ...] = tuple(p.name for p in TRAIN + MODEL if p.live)
#: Fields panda's fork may vary.
FORKABLE: tuple[str, ...] = tuple(p.name for p in HPARAMS if p.fork_scale)


def canonical(name: str) -> str:
    """The registered name an alias stands for (any other name unchanged)."""
    return ALIASES.get(name, name)


def names_and_aliases(params: Iterable[HParam]) -> tuple[str, ...]:
    """Every name and alias of ``params`` (for 'did you mean' suggestions)."""
    return tuple(n for p in params for n in (p.name, *p.aliases))


def check_value(name: str, value: Any, where: str = "") -> Any:
    """``value`` if field ``name`` (or an alias) may take it, else a one-line CaviarError; unknown names pass."""
    p = BY_NAME.get(canonical(name))
    return value if p is None else p.check(value, where)


def broken_rule(values: Mapping[str, Any]) -> str | None:
    """``"<key>: <value> <what it must be>"`` for the first rule the fields in ``values`` break, or None.

    Rules that read a field missing from ``values`` are skipped (a TrainConfig alone knows no batchnorm).
    """
    for rule in RULES:
        if all(k in values for k in rule.keys):
            phrase = rule.test(values)
            if phrase:
                return f"{rule.keys[0]}: {values[rule.keys[0]]!r} {phrase}"
    return None


def optimizer_betas(optimizer: str) -> tuple[str, ...]:
    """The averaging betas ``optimizer`` reads (what a fork varies besides the learning rate)."""
    return tuple(p.name for p in FIELDS if p.fork_scale == "one_minus_log" and optimizer in p.used_by)


def describe(params: Iterable[HParam] = HPARAMS) -> list[dict[str, Any]]:
    """JSON-able entries for ``params`` (panda's page reads the live ones from ``/api/hparams``)."""
    out = []
    for p in params:
        b = p.bounds
        out.append(
            {
                "name": p.name,
                "kind": p.kind,
                "default": list(p.default) if isinstance(p.default, tuple) else p.default,
                "help": p.help,
                "aliases": list(p.aliases),
                "choices": list(p.choices),
                "low": b.low,
                "high": b.high,
                "low_open": b.low_open,
                "high_open": b.high_open,
                "allowed": p.allowed,
            }
        )
    return out
