"""Studies to and from Optuna: ``import_optuna_study`` copies an Optuna RDB study into caviar's storage,
``export_optuna_study`` writes a caviar study as an Optuna study that ``optuna.load_study`` opens.

Distributions and scales map one to one: FloatDistribution -> ``linear`` (``log=True``: ``log``),
IntDistribution -> ``int`` (``log=True``: ``int_log``), CategoricalDistribution -> ``choice``. Optuna
has no one-minus-log distribution: such a parameter is exported as a FloatDistribution over the value
itself (beta, not 1 - beta), and its scale is recorded in the Optuna study's user attribute
``caviar.scales`` (``{name: "one_minus_log"}``), which an import reads back. A choice whose values are
lists (caviar's ``hidden`` widths) travels as the JSON text of each list.

Both check before they write: an unreachable database, one without Optuna's tables, an unknown or
multi-objective study are one-line errors, and nothing is written anywhere.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caviar.errors import StorageError
from caviar.storage import TrialEnd, TrialState, open_storage, safe_url
from caviar.tune.objective_spec import load_stored_spec
from caviar.tune.space import ChoiceParam, FloatParam, IntParam, Param, Space

#: Tables every Optuna RDB storage has.
OPTUNA_TABLES = ("studies", "trials", "trial_params", "version_info")
SCALES_ATTR = "caviar.scales"
METRIC_ATTR = "caviar.metric"
IMPORT_WORKER = "optuna-import"


@dataclass(frozen=True)
class Transfer:
    """What an import or export did: the study's name there, how many trials, each parameter's scale."""

    name: str
    n_trials: int
    storage: str
    scales: dict[str, str] = field(default_factory=dict)
    skipped: int = 0


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise StorageError("Optuna interop needs optuna: pip install 'caviar[tpe]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_optuna_url(url: str, *, must_exist: bool = True) -> None:
    """Refuse, in one line and without writing, a URL that cannot be reached or holds no Optuna storage.

    ``must_exist=False`` (an export target) accepts a database that does not exist yet or is empty.
    """
    import sqlalchemy as sa

    shown = safe_url(url)
    if "://" not in url:
        raise StorageError(f"{url!r} is not a database URL (e.g. sqlite:///optuna.db)")
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url[len("sqlite:///") :])
        if not path.is_file():
            if must_exist:
                raise StorageError(f"cannot open Optuna storage {shown}: no such file {path}")
            if not path.parent.is_dir():
                raise StorageError(f"cannot write Optuna storage {shown}: no folder {path.parent}")
            return
    try:
        engine = sa.create_engine(url)
    except (sa.exc.SQLAlchemyError, ImportError, ValueError) as exc:
        raise StorageError(f"cannot open Optuna storage {shown}: {_first_line(exc)}") from None
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
    except sa.exc.SQLAlchemyError as exc:
        raise StorageError(f"cannot reach Optuna storage {shown}: {_first_line(exc)}") from None
    finally:
        engine.dispose()
    missing = [t for t in OPTUNA_TABLES if t not in tables]
    if missing and (must_exist or tables):
        raise StorageError(
            f"{shown} is not an Optuna storage (no {', '.join(missing)} table"
            f"{'s' if len(missing) > 1 else ''}{'; it holds ' + ', '.join(sorted(tables)[:5]) if tables else ''})"
        )


# ------------------------------------------------------------------------------------------ scales
def param_of(name: str, dist: Any, scale: str | None = None) -> Param:
    """The caviar parameter of an Optuna distribution (``scale`` from ``caviar.scales`` wins for floats)."""
    d = _optuna().distributions
    if isinstance(dist, d.FloatDistribution):
        return FloatParam(name, dist.low, dist.high, scale or ("log" if dist.log else "linear"))
    if isinstance(dist, d.IntDistribution):
        return IntParam(name, dist.low, dist.high, "int_log" if dist.log else "int")
    if isinstance(dist, d.CategoricalDistribution):
        return ChoiceParam(name, tuple(dist.choices))
    raise StorageError(f"parameter {name!r}: Optuna distribution {type(dist).__name__} has no caviar scale")


def distribution_of(param: Param) -> Any:
    """The Optuna distribution of a caviar parameter (one-minus-log: a float over the value itself)."""
    d = _optuna().distributions
    if isinstance(param, FloatParam):
        return d.FloatDistribution(param.low, param.high, log=param.scale == "log")
    if isinstance(param, IntParam):
        return d.IntDistribution(param.low, param.high, log=param.scale == "int_log")
    if isinstance(param, ChoiceParam):
        return d.CategoricalDistribution(tuple(_choice_out(c) for c in param.choices))
    raise StorageError(f"parameter {param.name!r}: scale {param.scale!r} has no Optuna distribution")


def _choice_out(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def _choice_in(value: Any, param: Param) -> Any:
    if isinstance(param, ChoiceParam) and isinstance(value, str) and value not in param.choices:
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# ------------------------------------------------------------------------------------------ import
_STATES = {"COMPLETE": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED, "FAIL": TrialState.FAILED}


def import_optuna_study(url: str, study_name: str, storage: str, *, name: str | None = None) -> Transfer:
    """Copy Optuna study ``study_name`` at ``url`` into caviar ``storage`` as study ``name`` (default: the same).

    Finished trials keep their number, params, value, intermediate values (the curve, under the
    study's metric) and state (FAIL -> FAILED); running and waiting ones are skipped.
    """
    optuna = _optuna()
    check_optuna_url(url)
    shown = safe_url(url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            summaries = optuna.get_all_study_summaries(storage=url, include_best_trial=False)
            names = [s.study_name for s in summaries]
            if study_name not in names:
                known = ", ".join(names) or "none"
                raise StorageError(f"Optuna storage {shown} has no study {study_name!r}; it has {known}")
            source = optuna.load_study(study_name=study_name, storage=url)
            trials = source.get_trials(deepcopy=False)
    except StorageError:
        raise
    except Exception as exc:  # Optuna's own errors (a version it cannot read, ...)
        raise StorageError(f"cannot read Optuna study {study_name!r} at {shown}: {_first_line(exc)}") from None
    if len(source.directions) != 1:
        raise StorageError(f"Optuna study {study_name!r} has {len(source.directions)} objectives; caviar takes one")
    maximize = source.direction == optuna.study.StudyDirection.MAXIMIZE
    attrs = source.user_attrs
    scales = dict(attrs.get(SCALES_ATTR) or {})
    metric = str(attrs.get(METRIC_ATTR) or "value")
    params: dict[str, Param] = {}
    for t in trials:
        for pname, dist in t.distributions.items():
            params.setdefault(pname, param_of(pname, dist, scales.get(pname)))
    space = Space(params[n] for n in sorted(params))
    name = name or study_name
    finished = [t for t in trials if t.state.name in _STATES]
    spec: dict[str, Any] = {
        "study": {"name": name, "seed": 0},
        "search": {
            "strategy": "random",
            "trials": max(1, len(finished)),
            "metric": metric,
            "direction": "maximize" if maximize else "minimize",
        },
        "space": space.as_dict(),
        "objective": {"target": None},
    }
    load_stored_spec(spec)  # the mapped space is checked before anything is written
    store = open_storage(storage)
    spec["search"]["storage"] = store.url
    if any(s.name == name for s in store.list_studies()):
        raise StorageError(f"study {name!r} already exists in {store.url}; import it under another --name")
    study_id = store.create_study(name, spec, seed=0, metric=metric, direction="maximize" if maximize else "minimize")
    items, ends_by_number = [], {}
    for t in finished:
        values = {p: _choice_in(v, params[p]) for p, v in t.params.items()}
        full = {p: values.get(p) for p in space.names}
        unit = space.encode(full) if all(v is not None for v in full.values()) else None
        items.append({"number": t.number, "params": values, "unit": None if unit is None else list(unit), "round": 0})
        state = _STATES[t.state.name]
        value = t.value
        metrics = {metric: value} if value is not None else {}
        metrics.update({k: v for k, v in t.user_attrs.items() if isinstance(v, (int, float, str, bool))})
        objective = None if value is None or state != TrialState.COMPLETE else (value if maximize else -value)
        curve = [{"epoch": int(step), metric: float(v)} for step, v in sorted(t.intermediate_values.items())]
        error = "FAIL in Optuna" if state == TrialState.FAILED else None
        ends_by_number[t.number] = (state, metrics, objective, curve, error)
    store.enqueue_trials(study_id, items)
    claimed = store.claim_trials(study_id, IMPORT_WORKER, limit=max(1, len(items)))
    store.finish_trials(IMPORT_WORKER, [TrialEnd(r.id, *ends_by_number[r.number]) for r in claimed])
    store.add_event(study_id, "import", {"from": shown, "study": study_name, "trials": len(items)})
    return Transfer(
        name, len(items), store.url, {n: p.scale for n, p in space.params.items()}, len(trials) - len(finished)
    )


# ------------------------------------------------------------------------------------------ export
_OUT_STATES = {
    TrialState.COMPLETE: "COMPLETE",
    TrialState.PRUNED: "PRUNED",
    TrialState.FAILED: "FAIL",
    TrialState.DIVERGED: "FAIL",
}


def export_optuna_study(storage: str, study: str | int, url: str, *, name: str | None = None) -> Transfer:
    """Write caviar study ``study`` as an Optuna study at ``url`` (named ``name``, default the same).

    Values are the study's metric as the user reads it (``direction`` says which way is better), so
    Optuna's ``best_value`` is caviar's best metric. Intermediate values are the curve of that metric.
    """
    optuna = _optuna()
    store = open_storage(storage)
    record = store.get_study(study)
    spec = load_stored_spec(record.spec)
    space, metric = spec.space, record.metric
    check_optuna_url(url, must_exist=False)
    name = name or record.name
    direction = "maximize" if record.direction == "maximize" else "minimize"
    dists = {p.name: distribution_of(p) for p in space}
    records = [t for t in store.trials(record.id) if t.finished]
    curves = store.curves(record.id)
    out = []
    for t in records:
        state = optuna.trial.TrialState[_OUT_STATES[t.state]]
        value = t.metrics.get(metric)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if state == optuna.trial.TrialState.COMPLETE and not ok:
            state = optuna.trial.TrialState.FAIL
        steps = {
            int(r["epoch"]): float(r[metric])
            for r in curves.get(t.id, [])
            if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])
        }
        params = {k: _choice_out(v) for k, v in t.params.items() if k in dists}
        attrs = {"caviar.number": t.number, "caviar.round": t.round, "caviar.state": str(t.state)}
        if t.error:
            attrs["caviar.error"] = t.error
        out.append(
            optuna.trial.create_trial(
                state=state,
                value=float(value) if ok and state == optuna.trial.TrialState.COMPLETE else None,  # type: ignore[arg-type]
                params=params,
                distributions={k: dists[k] for k in params},
                intermediate_values=steps,
                user_attrs=attrs,
            )
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target = optuna.create_study(study_name=name, storage=url, direction=direction)
    except optuna.exceptions.DuplicatedStudyError:
        raise StorageError(
            f"Optuna storage {safe_url(url)} already has a study {name!r}; choose another name"
        ) from None
    except Exception as exc:
        raise StorageError(f"cannot write Optuna storage {safe_url(url)}: {_first_line(exc)}") from None
    scales = {p.name: p.scale for p in space}
    target.set_user_attr(SCALES_ATTR, {k: v for k, v in scales.items() if v == "one_minus_log"})
    target.set_user_attr(METRIC_ATTR, metric)
    target.set_user_attr("caviar.study", record.name)
    target.add_trials(out)
    return Transfer(name, len(out), safe_url(url), scales)
