"""The spec of a study whose trials are run by the user's own objective (``objective(trial)``).

The same TOML as caviar's own studies, without ``[data]``, ``[model]`` and ``[training]``: a
``[study]``, a ``[search]`` (the strategy, budget, storage, and what the objective returns: ``metric``
and ``direction``), an optional ``[search.halving]`` or ``[search.median]`` (what ``trial.should_stop()``
answers from), a ``[space]`` whose names are the objective's own (any name, each on its scale), and an
optional ``[objective] target = "module:function"``. Stored with the study as a dict that holds an
``objective`` table and no ``data``: :func:`load_stored_spec` tells the two kinds apart.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, model_validator

from caviar.errors import SpecError
from caviar.tune.samplers import Sampler
from caviar.tune.space import Space
from caviar.tune.spec import (
    NONMATERIAL_SPEC_KEYS,
    HalvingSection,
    SearchSection,
    StudySection,
    StudySpec,
    _check_keys,
    _format_error,
    _read_toml,
    _Section,
    apply_overrides,
    load_spec,
    resolve_storage,
    spec_diff,
    with_stored_task,
)

#: The sections an objective's spec may hold.
SECTIONS = ("study", "search", "space", "objective")
#: Spec keys that may differ when a study is resumed (besides the budget and execution settings).
RESUMABLE_KEYS = NONMATERIAL_SPEC_KEYS | {"target"}


class MedianSection(_Section):
    """``[search.median]``: stop a trial whose best value so far is worse than the median of the
    completed trials at the same epoch (after ``startup_trials`` completed, from ``warmup_epochs``)."""

    startup_trials: int = Field(5, ge=0)
    warmup_epochs: int = Field(default=0, ge=0)


class ObjectiveSearch(SearchSection):
    """``[search]`` for an external objective: ``metric`` is any name the objective returns."""

    metric: str = "value"
    #: ``direction`` in the TOML (SearchSection's ``direction`` is the property that resolves it).
    goal: Literal["maximize", "minimize"] | None = Field(default=None, alias="direction")
    median: MedianSection | None = None

    @model_validator(mode="after")
    def _one_pruner(self) -> ObjectiveSearch:
        if self.halving is not None and self.median is not None:
            raise ValueError("search: give [search.halving] or [search.median], not both")
        if self.strategy == "pbt" or self.pbt is not None or self.hyperband is not None:
            raise ValueError(
                "search: PBT and hyperband act inside caviar's own populations; an external objective takes "
                "strategy random, sobol, grid, coarse_to_fine or tpe, and [search.halving] or [search.median]"
            )
        if not self.metric:
            raise ValueError("search.metric: must name what the objective returns, e.g. 'accuracy'")
        return self

    @property
    def maximize(self) -> bool:
        """``direction``, or else the rule of caviar's own studies: a name ending in 'loss' is minimized."""
        if self.goal is not None:
            return self.goal == "maximize"
        return not self.metric.endswith("loss")

    @property
    def direction(self) -> str:
        """The study's stored direction, ``maximize`` or ``minimize``."""
        return "maximize" if self.maximize else "minimize"

    def objective(self, metric_value: float) -> float:
        """The metric turned into the value samplers MAXIMIZE."""
        return float(metric_value) if self.maximize else -float(metric_value)


class ObjectiveSection(_Section):
    """``[objective]``: what runs the trials, as ``module:function`` (``caviar tune --objective`` overrides it)."""

    target: str | None = None

    @model_validator(mode="after")
    def _target_form(self) -> ObjectiveSection:
        if self.target is not None:
            check_target(self.target, "objective.target")
        return self


def check_target(target: str, where: str = "--objective") -> str:
    """``module:function`` (the module dotted, the function a name); one line naming what is wrong."""
    module, sep, func = str(target).partition(":")
    if not sep or not module or not func or not all(p.isidentifier() for p in (*module.split("."), *func.split("."))):
        raise SpecError(f"{where}: {target!r} is not module:function (e.g. examples.torch_cnn:objective)")
    return target


class ObjectiveSpec(_Section):
    """A validated spec for an external objective: ``.space`` (any names), ``.search``, ``.sampler()``."""

    study: StudySection = Field(default_factory=StudySection)
    search: ObjectiveSearch = Field(default_factory=lambda: ObjectiveSearch.model_validate({}))
    space_table: dict[str, Any] = Field(default_factory=dict, alias="space")
    objective: ObjectiveSection = Field(default_factory=ObjectiveSection)

    _space: Space = PrivateAttr(default_factory=Space)
    _source: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> ObjectiveSpec:
        self._space = Space.from_dict(self.space_table, tunable=False)
        if not self._space.dim:
            raise SpecError("space: an objective needs at least one parameter, e.g. lr = {low = 1e-4, high = 1e-1}")
        self.space_table = self._space.as_dict()
        self.search.check_rounds()
        context = info.context or {}
        base_dir = Path(context.get("base_dir") or os.getcwd())
        stem = context.get("stem")
        self.study.name = self.study.name or stem or "objective"
        self.search.seed = self.study.seed if self.search.seed is None else self.search.seed
        self.search.storage = resolve_storage(self.search.storage, base_dir, stem)
        return self

    @property
    def space(self) -> Space:
        """The search space, each parameter on its scale (names are the objective's own)."""
        return self._space

    @property
    def source(self) -> Path | None:
        """The spec file this was loaded from (None for a dict)."""
        return self._source

    def sampler(self) -> Sampler:
        """The sampler ``[search]`` asks for, over this space."""
        return self.search.sampler_over(self.space)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict that :func:`load_objective_spec` turns back into an equal spec."""
        search = self.search.model_dump(mode="json", exclude_none=True, exclude={"goal"})
        search["direction"] = self.search.direction
        return {
            "study": self.study.model_dump(mode="json"),
            "search": search,
            "space": self.space.as_dict(),
            "objective": self.objective.model_dump(mode="json"),
        }


def is_objective_spec(raw: Mapping[str, Any]) -> bool:
    """Whether a raw (or stored) spec is an external objective's: an ``objective`` table and no ``data``."""
    return "objective" in raw and "data" not in raw


def load_objective_spec(
    source: str | os.PathLike[str] | Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
) -> ObjectiveSpec:
    """Load and validate an objective's spec from a TOML file or a dict (one-line SpecError on a mistake).

    A relative SQLite storage resolves against the spec file's folder (the working directory for a dict).
    """
    if isinstance(source, Mapping):
        raw, base_dir, stem, label = copy.deepcopy(dict(source)), Path.cwd(), None, ""
    else:
        path = Path(source)
        raw, base_dir, stem, label = _read_toml(path), path.resolve().parent, path.stem, f"{path}: "
    if overrides:
        raw = apply_overrides(raw, overrides)
    extra = [k for k in raw if k not in SECTIONS]
    try:
        if extra:
            raise SpecError(
                f"[{extra[0]}] is not for an external objective: its spec holds {', '.join(f'[{s}]' for s in SECTIONS)}"
                " (the objective loads its own data and builds its own model)"
            )
        _check_keys(raw, ObjectiveSpec)
        spec = ObjectiveSpec.model_validate(raw, context={"base_dir": base_dir, "stem": stem})
    except ValidationError as exc:
        raise SpecError(label + _format_error(exc.errors(include_url=False)[0])) from None
    except SpecError as exc:
        raise SpecError(f"{label}{exc}") from None
    spec._source = None if isinstance(source, Mapping) else Path(source).resolve()
    return spec


def stored_spec_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What makes two objective specs different experiments (the objective's import path does not)."""
    return spec_diff(old, new, RESUMABLE_KEYS)


def resolve_objective_spec(
    space_or_spec: ObjectiveSpec | Space | str | os.PathLike[str] | Mapping[str, Any],
    *,
    trials: int | None = None,
    storage: str | None = None,
    workers: int | None = None,
    strategy: str | None = None,
    seed: int | None = None,
    name: str | None = None,
    metric: str | None = None,
    direction: str | None = None,
    target: str | None = None,
    executor: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> ObjectiveSpec:
    """An objective's spec from a spec (file, dict, ObjectiveSpec) or a bare space (Space or table), with overrides.

    A mapping with a ``space`` key is a spec; any other mapping is a ``[space]`` table.
    """
    overrides: dict[str, Any] = dict(settings or {})
    for key, value in (
        ("search.trials", trials),
        ("search.workers", workers),
        ("search.strategy", strategy),
        ("study.name", name),
        ("search.metric", metric),
        ("search.direction", direction),
        ("search.executor", executor),
        ("objective.target", target),
    ):
        if value is not None:
            overrides[key] = value
    if storage is not None:
        overrides["search.storage"] = storage if "://" in storage else str(Path(storage).resolve())
    if seed is not None:
        overrides["study.seed"] = seed
        overrides["search.seed"] = seed
    source: str | os.PathLike[str] | Mapping[str, Any]
    if isinstance(space_or_spec, ObjectiveSpec):
        if not overrides:
            return space_or_spec
        source = space_or_spec.to_dict()
    elif isinstance(space_or_spec, Space):
        source = {"space": space_or_spec.as_dict()}
    elif isinstance(space_or_spec, Mapping):
        source = dict(space_or_spec) if "space" in space_or_spec else {"space": dict(space_or_spec)}
    else:
        source = space_or_spec
    return load_objective_spec(source, overrides or None)


def load_stored_spec(raw: Mapping[str, Any]) -> StudySpec | ObjectiveSpec:
    """The spec a study was stored with, of whichever kind it is."""
    return load_objective_spec(raw) if is_objective_spec(raw) else load_spec(with_stored_task(raw))


__all__ = [
    "HalvingSection",
    "MedianSection",
    "ObjectiveSearch",
    "ObjectiveSection",
    "ObjectiveSpec",
    "check_target",
    "is_objective_spec",
    "load_objective_spec",
    "load_stored_spec",
    "resolve_objective_spec",
    "stored_spec_diff",
]
