"""The study spec: a TOML file (or a dict of the same shape) that says what to tune and how.

Sections: ``[study]``, ``[data]``, ``[model]``, ``[training]``, ``[search]`` (with an optional
``[search.halving]``) and ``[space]``; docs/spec.md is the reference. Every mistake raises
:class:`~caviar.errors.SpecError` with ONE line: the file, the dotted key path, what was given and
what is allowed, e.g. ``spec.toml: model.activation: 'relux' is not one of relu, leaky_relu,
tanh, sigmoid``.

A hyperparameter named in ``[space]`` and also given a fixed value in ``[model]``/``[training]``
is tuned: the space wins, the fixed value is only the base the other trials' values replace.

``[model]`` and ``[training]`` are built from the hyperparameter registry (:mod:`caviar.hparams`):
its fields, defaults, bounds, choices and aliases, and its rules across fields (checked here against
the fixed values and the values the space can produce).
"""

from __future__ import annotations

import copy
import itertools
import os
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from caviar.config import ModelConfig, TrainConfig, with_values
from caviar.data.datasets import DATASET_TASKS, TABLE_SUFFIXES, Dataset, in_memory, table_suffix, target_task
from caviar.errors import DataError, SpecError
from caviar.hparams import BY_NAME, HPARAMS, RULES, Bounds, HParam, canonical, is_bool
from caviar.metrics import CLASSIFICATION, DEFAULT, REGRESSION, check_metric_for_task, get_metric
from caviar.metrics import METRICS as METRIC_REGISTRY
from caviar.storage.names import check_study_name
from caviar.tune.samplers import STRATEGIES, Sampler, make_sampler
from caviar.tune.space import TUNABLE, ChoiceParam, Space, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

DatasetName = Literal["digits", "iris", "wine", "breast_cancer", "diabetes", "mnist", "mnist1d"]
DATASETS: tuple[str, ...] = get_args(DatasetName)
DATA_SUFFIXES = TABLE_SUFFIXES
METRICS = tuple(METRIC_REGISTRY)  # caviar.metrics is the one list (task, direction, function)
#: The most trials one study may ask for: every trial is a stored row, planned before it trains.
MAX_TRIALS = 100_000


class _Section(BaseModel):
    """Base of every section: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False, populate_by_name=True)


class StudySection(_Section):
    """``[study]``: the study's name (default: the spec file's stem) and its root seed."""

    name: str | None = None
    seed: int = Field(default=0, ge=0, lt=2**63)

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        return None if value is None else check_study_name(value)


def _base_dir(info: ValidationInfo) -> Path:
    return Path((info.context or {}).get("base_dir") or os.getcwd())


def _existing(value: str, info: ValidationInfo, what: str) -> str:
    path = Path(value).expanduser()
    resolved = path if path.is_absolute() else _base_dir(info) / path
    if not resolved.exists():
        where = "" if path.is_absolute() else f" (looked at {resolved})"
        raise ValueError(f"{what} '{value}' does not exist{where}")
    return str(resolved.resolve())


class DataSection(_Section):
    """``[data]``: a built-in dataset, a data file, or data given in memory (``in_memory = true``, set by
    ``load_spec(..., data=...)``), its task, and how to split and scale it.

    ``task``: ``classification`` or ``regression``; left out, the named data set's own, or told from
    the target (caviar.data.target: integers and text are classes, fractional floats a quantity; float
    whole numbers ask for it). A regression's task is written into the stored spec."""

    dataset: DatasetName | None = None
    path: str | None = None
    in_memory: bool = False
    task: Literal["classification", "regression"] | None = None
    label: str = "label"
    data_dir: str | None = None
    validation_fraction: float = Field(default=0.2, ge=0, lt=1)
    test_fraction: float = Field(default=0.2, ge=0, lt=1)
    standardize: bool = True

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if table_suffix(value) is None:
            raise ValueError(f"'{value}' should end in {', '.join(DATA_SUFFIXES)}")
        return _existing(value, info, "file")

    @field_validator("data_dir")
    @classmethod
    def _dir_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _existing(value, info, "folder")

    @model_validator(mode="after")
    def _one_source(self) -> DataSection:
        if self.in_memory and (self.dataset is not None or self.path is not None):
            raise ValueError("data: data in memory takes no dataset or path")
        if self.dataset is None and self.path is None and not self.in_memory:
            raise ValueError(f'data: give dataset = one of {", ".join(DATASETS)}, or path = "file.csv"')
        if self.dataset is not None and self.path is not None:
            raise ValueError("data: give either dataset or path, not both")
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"data: validation_fraction + test_fraction must be below 1, got "
                f"{self.validation_fraction} + {self.test_fraction}"
            )
        return self


def _not_a_bool(value: Any) -> Any:
    """A boolean is never a number (pydantic's lax mode would take true as 1)."""
    if is_bool(value):
        raise ValueError(f"{value!r} is a boolean, not a number")
    return value


def _widths_in(bounds: Bounds) -> Any:
    def check(value: tuple[int, ...]) -> tuple[int, ...]:
        if not all(bounds.contains(w) for w in value):
            raise ValueError(f"widths must be integers {bounds.words()}, got {list(value)}")
        return value

    return check


def _annotation(p: HParam) -> Any:
    """The pydantic type of a registered field: its kind, choices and bounds."""
    if p.kind == "bool":
        return StrictBool
    if p.kind == "choice":
        return Literal[p.choices]
    if p.kind == "widths":
        return Annotated[tuple[Annotated[int, BeforeValidator(_not_a_bool)], ...], AfterValidator(_widths_in(p.bounds))]
    finite: dict[str, Any] = {"allow_inf_nan": False} if p.kind == "float" else {}
    number = int if p.kind == "int" else float
    return Annotated[number, BeforeValidator(_not_a_bool), Field(**p.bounds.limits(), **finite)]


def _field(p: HParam) -> tuple[Any, Any]:
    """``(type, Field)`` of a registered field for ``create_model``; a shorthand has no default."""
    default = p.default if p.is_field else None
    annotation = _annotation(p) if p.is_field else Union[_annotation(p), None]  # noqa: UP007
    names = AliasChoices(p.name, *p.aliases) if p.aliases else None
    return annotation, Field(default, description=p.help, validation_alias=names)


def _section_fields(section: str) -> dict[str, Any]:
    return {p.name: _field(p) for p in HPARAMS if p.section == section and p.fixable}


_ModelFields: Any = create_model("_ModelFields", __base__=_Section, **_section_fields("model"))
_TrainingFields: Any = create_model("_TrainingFields", __base__=_Section, **_section_fields("training"))


class ModelSection(_ModelFields):
    """``[model]``: ModelConfig's fields; ``depth``/``width`` are shorthand for hidden = (width,) * depth."""

    if TYPE_CHECKING:  # the fields come from the registry; these lines only tell the type checker
        hidden: tuple[int, ...]
        depth: int | None
        width: int | None

    @model_validator(mode="after")
    def _shorthand(self) -> ModelSection:
        if self.depth is None and self.width is None:
            return self
        if "hidden" in self.model_fields_set:
            raise ValueError("model: give hidden or depth/width, not both")
        if self.width is None and not self.hidden:
            raise ValueError("model: depth needs width (hidden is empty)")
        depth = len(self.hidden) if self.depth is None else self.depth
        width = self.hidden[0] if self.width is None else self.width
        self.hidden = (width,) * depth
        return self


class TrainingSection(_TrainingFields):
    """``[training]``: TrainConfig's fields, with their ranges (caviar.hparams)."""


class HalvingSection(_Section):
    """``[search.halving]``: successive halving, keep 1/eta of the members at each rung."""

    eta: int = Field(default=3, ge=2)
    min_epochs: int = Field(default=1, ge=1)


class HyperbandSection(_Section):
    """``[search.hyperband]``: brackets of successive halving across populations (tune.hyperband)."""

    max_epochs: int | None = Field(default=None, ge=1)
    eta: int = Field(default=3, ge=2)
    brackets: int | None = Field(default=None, ge=1)
    #: ASHA promotion: a rung judged against every result at it in the study so far (tune.asha);
    #: None: when search.workers > 1
    asynchronous: bool | None = None


class PBTSection(_Section):
    """``[search.pbt]``: population-based training inside each population (Ray Tune's key names)."""

    population_size: int = Field(default=16, ge=2)
    perturbation_interval: int = Field(default=2, ge=1)
    quantile_fraction: float = Field(default=0.25, gt=0, le=0.5)
    hyperparam_mutations: list[str] | None = None
    perturbation_factors: list[float] = Field(default_factory=lambda: [1.2, 0.8], min_length=1)
    resample_probability: float = Field(default=0.25, ge=0, le=1)


#: ``search.strategy``: a sampler's name, or ``pbt`` (random starting points, then PBT inside each population).
SEARCH_STRATEGIES = (*STRATEGIES, "pbt")


class SearchSection(_Section):
    """``[search]``: the strategy, the budget, where results go and what is maximized."""

    strategy: Literal[SEARCH_STRATEGIES] = "random"  # type: ignore[valid-type]
    trials: int = Field(default=20, ge=1, le=MAX_TRIALS)
    rounds: int = Field(default=3, ge=1)
    top_fraction: float = Field(default=0.25, gt=0, le=1)
    margin: float = Field(default=0.1, ge=0)
    min_width: float = Field(default=0.02, ge=0, le=1)
    points_per_axis: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    workers: int = Field(default=1, ge=1)
    storage: str | None = None
    if TYPE_CHECKING:  # validation sets the task's default: never None once a spec is loaded
        metric: str = "val_accuracy"
    else:  # None: the task's default (val_accuracy for classification, val_r2 for regression)
        metric: Literal[METRICS] | None = None
    max_population: int = Field(default=64, ge=1)
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    halving: HalvingSection | None = None
    pbt: PBTSection | None = None
    hyperband: HyperbandSection | None = None

    def bracket_table(self, epochs: int) -> list[Any]:
        """Hyperband's brackets for this search (``epochs``: training.epochs), or [] without hyperband."""
        from caviar.tune.hyperband import brackets

        h = self.hyperband
        if h is None:
            return []
        return brackets(self.trials, h.max_epochs or epochs, h.eta, h.brackets)

    @property
    def pbt_settings(self) -> PBTSection | None:
        """``[search.pbt]`` (its defaults when only ``strategy = "pbt"`` is given); None without PBT."""
        if self.strategy != "pbt":
            return None
        return self.pbt or PBTSection()

    def sampler_over(self, space: Space) -> Sampler:
        """The sampler these settings ask for over ``space`` (PBT draws its starting points at random)."""
        return make_sampler(
            "random" if self.strategy == "pbt" else self.strategy,
            space,
            self.seed or 0,
            trials=self.trials,
            rounds=self.rounds,
            top_fraction=self.top_fraction,
            margin=self.margin,
            min_width=self.min_width,
            points_per_axis=self.points_per_axis,
        )

    def check_rounds(self) -> None:
        """Coarse-to-fine needs a trial per round at least (a one-line SpecError)."""
        if self.strategy == "coarse_to_fine" and self.rounds > self.trials:
            raise SpecError(
                f"search.rounds: {self.rounds} rounds need at least as many trials, got trials = {self.trials}"
            )

    @property
    def population_cap(self) -> int:
        """The most members one population holds: ``max_population``, and PBT's ``population_size``."""
        pbt = self.pbt_settings
        return self.max_population if pbt is None else min(self.max_population, pbt.population_size)

    @property
    def maximize(self) -> bool:
        """Whether a larger metric is better (caviar.metrics says, for each metric)."""
        return get_metric(self.metric or DEFAULT[CLASSIFICATION]).maximize  # (None only before validation)

    def objective(self, metric_value: float) -> float:
        """The metric turned into the value samplers MAXIMIZE."""
        return get_metric(self.metric or DEFAULT[CLASSIFICATION]).objective(metric_value)


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve().as_posix()}"


def resolve_storage(storage: str | None, base_dir: Path, stem: str | None) -> str:
    """A SQLAlchemy URL: the default file beside the spec, plain paths and relative SQLite files
    resolved against the spec's folder; other URLs as given."""
    if storage is None:
        return _sqlite_url(base_dir / f"{stem or 'caviar'}.db")
    if "://" not in storage:
        path = Path(storage).expanduser()
        return _sqlite_url(path if path.is_absolute() else base_dir / path)
    prefix = "sqlite:///"
    rest = storage[len(prefix) :] if storage.startswith(prefix) else ""
    if rest and rest != ":memory:" and not rest.startswith("file:") and not Path(rest).is_absolute():
        return _sqlite_url(base_dir / rest)
    return storage


class StudySpec(_Section):
    """A validated study spec. ``.space`` is the :class:`Space`; ``configs_for`` builds a trial's configs."""

    study: StudySection = Field(default_factory=StudySection)
    data: DataSection
    model: ModelSection = Field(default_factory=ModelSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    search: SearchSection = Field(default_factory=SearchSection)
    space_table: dict[str, Any] = Field(default_factory=dict, alias="space")

    _space: Space = PrivateAttr(default_factory=Space)
    _source: Path | None = PrivateAttr(None)
    _data: Dataset | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> StudySpec:
        self._space = Space.from_dict(self.space_table)
        self.space_table = self._space.as_dict()
        _check_space_conflicts(self)
        _check_rules(self)
        context = info.context or {}
        task = _resolve_task(self.data, context)
        if task == REGRESSION:
            self.data.task = "regression"  # stored with the spec: a reload need not look at the data again
        self.search.metric = self.search.metric or DEFAULT[task]
        try:  # val_r2 in a classification study, val_accuracy in a regression's...
            check_metric_for_task(self.search.metric, task)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        base_dir = Path(context.get("base_dir") or os.getcwd())
        stem = context.get("stem")
        self.study.name = self.study.name or stem or "study"
        self.search.seed = self.study.seed if self.search.seed is None else self.search.seed
        self.search.storage = resolve_storage(self.search.storage, base_dir, stem)
        return self

    @property
    def name(self) -> str:
        """The study's name (validation fills in the file's stem when none is given)."""
        assert self.study.name is not None, "set by validation"
        return self.study.name

    @property
    def task(self) -> str:
        """``classification`` or ``regression`` (validation resolves it; see DataSection)."""
        return self.data.task or CLASSIFICATION

    @property
    def memory_data(self) -> Dataset | None:
        """The data given in memory (``load_spec(..., data=...)``), None for a dataset or a file."""
        return self._data

    @property
    def storage_url(self) -> str:
        """The SQLAlchemy URL the study is stored at (validation resolves the default file)."""
        assert self.search.storage is not None, "set by validation"
        return self.search.storage

    @property
    def space(self) -> Space:
        """The search space, each hyperparameter on its scale."""
        return self._space

    @property
    def source(self) -> Path | None:
        """The spec file this was loaded from (None for a dict)."""
        return self._source

    def base_configs(self) -> tuple[ModelConfig, TrainConfig]:
        """The fixed model and training configs, before any trial's values."""
        model = ModelConfig(**self.model.model_dump(exclude={"depth", "width"}))
        return model, TrainConfig(**self.training.model_dump())

    def configs_for(self, values: Mapping[str, Any]) -> tuple[ModelConfig, TrainConfig]:
        """The configs of a trial: its ``values`` (depth, width and bn_beta included) on the base ones."""
        model, train = self.base_configs()
        return with_values(model, train, _config_values(values, model.hidden))

    def sampler(self) -> Sampler:
        """The sampler ``[search]`` asks for, over this space."""
        return self.search.sampler_over(self.space)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict that ``load_spec`` turns back into an equal spec (paths resolved)."""
        return {
            "study": self.study.model_dump(mode="json"),
            "data": self.data.model_dump(
                mode="json", exclude_none=True, exclude=None if self.data.in_memory else {"in_memory"}
            ),
            "model": self.model.model_dump(mode="json", exclude={"depth", "width"}),
            "training": self.training.model_dump(mode="json"),
            "search": self.search.model_dump(mode="json", exclude_none=True),
            "space": self.space.as_dict(),
        }


def _resolve_task(data: DataSection, context: Mapping[str, Any]) -> str:
    """The study's task: ``[data] task``, else the named data set's, the in-memory data's (told from
    its target when it was checked) or a data file's target's; a one-line SpecError when they disagree."""
    own: str | None = None
    if data.dataset is not None:
        own, where = DATASET_TASKS[data.dataset], f"dataset '{data.dataset}'"
    elif data.in_memory and context.get("task") is not None:
        own, where = str(context["task"]), "the data in memory"
    elif data.path is not None and data.task is None:
        try:
            own, where = target_task(data.path, data.label), f"'{data.path}'"
        except DataError as exc:
            raise SpecError(f"data: {exc}") from None
    if data.task is not None and own is not None and own != data.task:
        raise SpecError(f"data.task: {data.task!r}, but {where} is for {own}")
    return data.task or own or CLASSIFICATION


def _check_space_conflicts(spec: StudySpec) -> None:
    names = set(spec.space.names)
    if "hidden" in names and names & {"depth", "width"}:
        raise SpecError("space: tune hidden or depth/width, not both")
    if {"bn_beta", "bn_momentum"} <= names:
        raise SpecError("space: tune bn_beta or bn_momentum (= 1 - bn_beta), not both")
    if "depth" in names and "width" not in names and not spec.model.hidden:
        raise SpecError("space.depth: needs model.width (or a non-empty model.hidden) for the layer width")
    halving = spec.search.halving
    if halving and "epochs" not in names and halving.min_epochs > spec.training.epochs:
        raise SpecError(
            f"search.halving.min_epochs: {halving.min_epochs} is more than training.epochs ({spec.training.epochs})"
        )
    _check_pbt(spec)
    _check_hyperband(spec)
    spec.search.check_rounds()


def _check_hyperband(spec: StudySpec) -> None:
    """``[search.hyperband]``: not with halving or epochs in the space; max_epochs sets training.epochs."""
    from caviar.tune.hyperband import max_brackets

    h = spec.search.hyperband
    if h is None:
        return
    if spec.search.halving is not None:
        raise SpecError("search.hyperband: give [search.hyperband] or [search.halving], not both (its brackets halve)")
    if "epochs" in spec.space:
        raise SpecError(
            "space.epochs: hyperband sets every trial's budget (search.hyperband.max_epochs); do not tune it"
        )
    if h.max_epochs is not None:
        spec.training.epochs = h.max_epochs  # every trial may train max_epochs; its rungs prune it earlier
    most = max_brackets(spec.training.epochs, h.eta)
    if h.brackets is not None and h.brackets > most:
        raise SpecError(
            f"search.hyperband.brackets: {h.brackets} brackets need max_epochs >= eta**{h.brackets - 1} = "
            f"{h.eta ** (h.brackets - 1)}; with {spec.training.epochs} epochs and eta = {h.eta} at most {most}"
        )


def _check_pbt(spec: StudySpec) -> None:
    """``[search.pbt]``: only with strategy "pbt", per-member names to mutate, an interval inside the training."""
    from caviar.tune.explore import check_factors
    from caviar.tune.pbt import per_member_names

    search = spec.search
    if search.pbt is not None and search.strategy != "pbt":
        raise SpecError(f'search.pbt: needs search.strategy = "pbt", got {search.strategy!r}')
    pbt = search.pbt_settings
    if pbt is None:
        return
    names = per_member_names(spec.space)
    if not names:
        have = ", ".join(spec.space.names) or "nothing"
        raise SpecError(
            f"search.strategy: 'pbt' needs a per-member hyperparameter in [space] (learning_rate, momentum, "
            f"beta1, beta2, rho, epsilon, l2, lr_decay, bn_momentum, bn_beta, dropout); the space has {have}"
        )
    for name in pbt.hyperparam_mutations or ():
        if canonical(name) not in names:
            raise SpecError(
                f"search.pbt.hyperparam_mutations: {name!r} is not a per-member hyperparameter of [space] "
                f"(one of {', '.join(names)})"
            )
    try:
        check_factors(pbt.perturbation_factors)
    except ValueError as exc:
        raise SpecError(f"search.pbt.perturbation_factors: {exc}") from None
    epochs = spec.space["epochs"].high if "epochs" in spec.space else spec.training.epochs  # type: ignore[attr-defined]
    if pbt.perturbation_interval >= epochs:
        raise SpecError(
            f"search.pbt.perturbation_interval: {pbt.perturbation_interval} epochs is not shorter than the "
            f"training ({epochs} epochs): no member would ever be perturbed"
        )


def _candidates(param: Any) -> tuple[Any, ...]:
    """The values of a param that a rule must hold for: every choice, or both ends of a range."""
    return param.choices if isinstance(param, ChoiceParam) else (param.low, param.high)


def _check_rules(spec: StudySpec) -> None:
    """The registry's rules across fields, for the fixed values and for every value the space can give."""
    model, train = spec.base_configs()
    fixed = {**vars(model), **vars(train)}
    for rule in RULES:
        tuned = [k for k in rule.keys if k in spec.space]
        options = [_candidates(spec.space[k]) if k in tuned else (fixed[k],) for k in rule.keys]
        for combo in itertools.product(*options):
            values = dict(zip(rule.keys, combo, strict=True))
            phrase = rule.test(values)
            if not phrase:
                continue
            key = rule.keys[0]
            if not tuned:
                raise SpecError(f"{BY_NAME[key].section}.{key}: {values[key]!r} {phrase}")
            given = " with ".join(f"{k} = {v!r}" for k, v in values.items())
            raise SpecError(f"space.{tuned[0]}: can give {given}, but {key} {phrase}")


def _config_values(values: Mapping[str, Any], hidden: tuple[int, ...]) -> dict[str, Any]:
    """A trial's values as ModelConfig/TrainConfig fields: depth/width -> hidden, bn_beta -> bn_momentum."""
    out = {canonical(name): value for name, value in values.items()}
    for name in out:
        if name not in TUNABLE:
            raise SpecError(f"not a tunable hyperparameter: '{name}'{did_you_mean(name, TUNABLE)}")
    depth, width = out.pop("depth", None), out.pop("width", None)
    if depth is not None or width is not None:
        if width is None and not hidden:
            raise SpecError("depth needs a width: set model.width or tune width")
        w = int(hidden[0] if width is None else width)
        out["hidden"] = (w,) * int(len(hidden) if depth is None else depth)
    if "bn_beta" in out:
        out["bn_momentum"] = 1.0 - float(out.pop("bn_beta"))
    if "hidden" in out:
        out["hidden"] = tuple(int(w) for w in out["hidden"])
    for name, value in out.items():
        kind = TUNABLE[name].kind
        if kind == "int":
            out[name] = int(value)
        elif kind == "float":
            out[name] = float(value)
    return out


# --------------------------------------------------------------------------------------------
# Loading


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The section model inside an annotation such as ``Optional[HalvingSection]``."""
    # get_origin first: on Python 3.10 a generic alias (tuple[int, ...]) passes isinstance(..., type)
    if get_origin(annotation) is None and isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            found = _section_model(arg)
            if found:
                return found
    return None


def _keys_of(model: type[BaseModel]) -> dict[str, str]:
    """Every key a section accepts (field names, aliases) -> the field it sets."""
    keys = {}
    for name, f in model.model_fields.items():
        keys[f.alias or name] = name
        if isinstance(f.validation_alias, AliasChoices):
            keys.update({str(choice): name for choice in f.validation_alias.choices})
    return keys


def _check_keys(raw: Mapping[str, Any], model: type[BaseModel], prefix: str = "") -> None:
    """Unknown keys, with the nearest known one (pydantic's own message has no suggestion); an alias
    given beside its name (``lr`` and ``learning_rate``) is refused rather than one silently winning."""
    by_key = _keys_of(model)
    seen: dict[str, str] = {}
    for key, value in raw.items():
        if key not in by_key:
            raise SpecError(f"unknown key '{prefix}{key}'{did_you_mean(str(key), by_key)}")
        name = by_key[key]
        if name in seen:
            raise SpecError(f"{prefix}{key}: same as '{prefix}{seen[name]}'; give one of them")
        seen[name] = key
        sub = _section_model(model.model_fields[name].annotation)
        if sub is not None and isinstance(value, Mapping):
            _check_keys(value, sub, f"{prefix}{key}.")


def _format_error(err: Mapping[str, Any]) -> str:
    """One line from pydantic's first error: dotted path, the value given, what is allowed."""
    loc = ".".join(str(part) for part in err["loc"])
    kind, msg, given = err["type"], str(err["msg"]), err.get("input")
    if kind == "literal_error":
        expected = str(err["ctx"]["expected"]).replace("'", "").replace(" or ", ", ")
        text = f"{given!r} is not one of {expected}"
    elif kind in ("value_error", "assertion_error"):
        text = msg.split(", ", 1)[1] if msg.startswith(("Value error, ", "Assertion failed, ")) else msg
        head = text.split(": ", 1)[0]
        if not loc or head == loc or head.startswith(f"{loc}."):
            return text
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        text = f"expected a table, got {given!r}"
    elif kind == "missing":
        text = "is missing"
        if loc == "data":
            text += f' (add a [data] table: dataset = one of {", ".join(DATASETS)}, or path = "file.csv")'
    else:
        text = f"{given!r} {msg.replace('Input should', 'should', 1)}"
    return f"{loc}: {text}" if loc else text


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"spec file '{path}' is not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})"
        ) from None
    except FileNotFoundError:
        raise SpecError(f"spec file '{path}' not found") from None
    except OSError as exc:
        raise SpecError(f"spec file '{path}' cannot be read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: invalid TOML: {exc}") from None


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``{"search.trials": 8, "data.data_dir": "/data/mnist"}``) in a raw spec."""
    for dotted, value in overrides.items():
        parts = str(dotted).split(".")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(f"override '{dotted}': '{part}' is not a table")
            node = child
        node[parts[-1]] = value
    return raw


def load_spec(
    source: str | os.PathLike[str] | Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    data: Any = None,
) -> StudySpec:
    """Load and validate a spec from a TOML file or a dict; every mistake is a one-line SpecError.

    Relative paths (data.path, data.data_dir, a SQLite storage) resolve against the spec file's
    folder, or the working directory for a dict. ``overrides`` sets dotted keys first. ``data``: the
    study's data in memory instead of ``[data]``'s dataset or path, a pandas DataFrame (``[data] label``
    names its label column) or a pair ``(X, y)`` (see caviar.data.in_memory); ``[data]`` may then be
    left out or give only the split and scaling keys.
    """
    if isinstance(source, Mapping):
        raw, base_dir, stem, label = copy.deepcopy(dict(source)), Path.cwd(), None, ""
    else:
        path = Path(source)
        raw, base_dir, stem, label = _read_toml(path), path.resolve().parent, path.stem, f"{path}: "
    if overrides:
        raw = apply_overrides(raw, overrides)
    dataset: Dataset | None = None
    if data is not None:
        section = dict(raw.get("data") or {})
        if section.get("dataset") is not None or section.get("path") is not None:
            raise SpecError(f"{label}data: data is given in memory; the spec's [data] takes no dataset or path")
        task = section.get("task")
        if task not in (None, CLASSIFICATION, REGRESSION):
            raise SpecError(f"{label}data.task: {task!r} is not one of {CLASSIFICATION}, {REGRESSION}")
        dataset = in_memory(data, section.get("label", "label"), task=task)  # a DataError names what is wrong
        raw["data"] = {**section, "in_memory": True}
    try:
        _check_keys(raw, StudySpec)
        context = {"base_dir": base_dir, "stem": stem, "task": None if dataset is None else dataset.task}
        spec = StudySpec.model_validate(raw, context=context)
    except ValidationError as exc:
        raise SpecError(label + _format_error(exc.errors(include_url=False)[0])) from None
    except SpecError as exc:
        raise SpecError(f"{label}{exc}") from None
    spec._source = None if isinstance(source, Mapping) else Path(source).resolve()
    spec._data = dataset
    return spec


__all__ = [
    "DATASETS",
    "DataSection",
    "HalvingSection",
    "HyperbandSection",
    "ModelSection",
    "PBTSection",
    "SearchSection",
    "StudySection",
    "StudySpec",
    "TrainingSection",
    "apply_overrides",
    "load_spec",
    "resolve_storage",
]


def with_stored_task(raw: Any) -> Any:
    """A stored spec (a dict) with its ``[data] task``: a study's spec without one is a classification's
    (a regression's is always stored with it), so that one whose data's target cannot tell (floats of
    whole numbers) still loads."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("data"), Mapping) or "task" in raw["data"]:
        return raw
    return {**raw, "data": {**raw["data"], "task": CLASSIFICATION}}


#: Spec keys (at any depth) that may change when a study is resumed: budget and execution settings.
NONMATERIAL_SPEC_KEYS = frozenset(
    {"trials", "n_trials", "budget", "workers", "n_workers", "executor", "storage", "timeout", "description"}
)


def spec_diff(
    old: Any, new: Any, ignore: frozenset[str] | set[str] = NONMATERIAL_SPEC_KEYS, path: str = ""
) -> list[str]:
    """Dotted paths where two specs (as dicts) differ, skipping keys in ``ignore`` at any depth.

    A resumed study must describe the same experiment: storage refuses it when this names any path.
    A spec without ``[data] task`` (stored before tasks existed, or told classification from its
    data) is a classification's: ``task = "classification"`` on one side only is no difference.
    """
    if not path:
        old, new = with_stored_task(old), with_stored_task(new)
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            if key in ignore:
                continue
            sub = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                out.append(sub)
            else:
                out.extend(spec_diff(old[key], new[key], ignore, sub))
        return out
    return [] if old == new else [path or "<spec>"]
