"""The trial an external objective gets: ``objective(trial)`` reads ``trial.params``, reports each
epoch with ``trial.report(epoch, **metrics)``, asks ``trial.should_stop()``, and may opt in to live
control with ``trial.live()`` (then it reads ``trial.hyperparameters`` between epochs).

Reported epochs are the trial's curve in storage (what the dashboard draws); they must be numbers
and their epochs must increase. A mistake raises :class:`ObjectiveError`, which, uncaught, ends the
trial FAILED with that one line as its reason.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from caviar.errors import CaviarError
from caviar.storage import Storage, TrialRecord, TrialState
from caviar.tune.pruning import Pruner
from caviar.tune.space import did_you_mean

if TYPE_CHECKING:
    from caviar.tune.live import LiveControl


class ObjectiveError(CaviarError):
    """An objective used its trial wrongly (an epoch out of order, a metric that is not a number)."""


class TrialPruned(Exception):  # noqa: N818 - Optuna's name, so Optuna users' code reads the same
    """Raise it from an objective to end the trial PRUNED (what ``trial.should_stop()`` suggests)."""


class UnknownParameter(KeyError):
    """``trial.params[name]`` for a name the space does not have; its message says which ones it has."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown parameter"


class Params(Mapping[str, Any]):
    """A trial's parameter values, on their scales; an unknown name is a KeyError with a did-you-mean."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            known = ", ".join(self._values) or "nothing"
            raise UnknownParameter(
                f"trial.params[{name!r}]: not in the space{did_you_mean(str(name), self._values)}; it has {known}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Params({self._values!r})"


def _number(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        if hasattr(value, "item") and getattr(value, "size", 1) == 1:  # a 0-d tensor or array
            return _number(name, value.item())
        raise ObjectiveError(f"report: {name} = {value!r} is not a number")
    return float(value)


class Trial:
    """One trial of an external objective, bound to its stored record and the worker that runs it."""

    def __init__(
        self,
        storage: Storage,
        record: TrialRecord,
        worker_id: str,
        *,
        study_name: str = "",
        metric: str = "value",
        pruner: Pruner | None = None,
    ) -> None:
        self.storage = storage
        self.record = record
        self.worker_id = worker_id
        self.study_name = study_name
        self.metric = metric
        self.pruner = pruner
        self.params = Params(record.params)
        self.rows: list[dict[str, Any]] = []
        self._hp: dict[str, Any] = dict(record.params)
        self._lock = threading.Lock()
        self._stop_reason: str | None = None
        self._live: LiveControl | None = None

    # ---- what the objective reads
    @property
    def number(self) -> int:
        """The trial's number in its study (0, 1, ...)."""
        return self.record.number

    @property
    def id(self) -> int:
        """The trial's id in storage."""
        return self.record.id

    @property
    def study_id(self) -> int:
        return self.record.study_id

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The values to use now: the params, as changed by live controls (a copy; read it each epoch)."""
        with self._lock:
            return dict(self._hp)

    @property
    def epoch(self) -> int | None:
        """The last epoch reported (None before the first)."""
        return self.rows[-1]["epoch"] if self.rows else None

    # ---- what the objective tells
    def report(self, epoch: int, **metrics: Any) -> None:
        """Store epoch ``epoch``'s metrics (numbers) as a curve row; epochs must increase.

        On a live trial this is also where controls land: a change applies from the next epoch,
        and a pause holds the objective here until it is resumed.
        """
        if isinstance(epoch, (bool, np.bool_)) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ObjectiveError(f"report: epoch {epoch!r} is not a non-negative integer")
        epoch = int(epoch)
        last = self.epoch
        if last is not None and epoch <= last:
            raise ObjectiveError(f"report: epoch {epoch} after epoch {last}; epochs must increase")
        row: dict[str, Any] = {"epoch": epoch}
        for name, value in metrics.items():
            if name == "epoch":
                raise ObjectiveError("report: 'epoch' is the first argument, not a metric")
            row[name] = _number(name, value)
        self.rows.append(row)
        written = self.storage.add_curves({self.id: [row]}, self.worker_id)
        if self.id not in written:
            raise ObjectiveError(f"trial #{self.number} is no longer this worker's (it was requeued); stopping")
        if self._live is not None:
            self._live.at_epoch(self, epoch)

    def save_artifact(self, name: str, data: bytes) -> None:
        """Store bytes with the trial (e.g. its model file); the loggers hand the best trial's on."""
        self.storage.save_artifact(self.id, name, bytes(data))

    def should_stop(self) -> bool:
        """Whether to stop now: the study's pruner (halving or median) says so, or a live control did."""
        if self._stop_reason is not None:
            return True
        if self.pruner is None or not self.rows:
            return False
        study_id = self.record.study_id
        curves = self.storage.curves(study_id)
        others = {tid: rows for tid, rows in curves.items() if tid != self.id}
        completed = {t.id for t in self.storage.trials(study_id, [TrialState.COMPLETE])}
        if self.pruner.stops(self.rows[-1]["epoch"], self.rows, others, completed):
            self._stop_reason = "pruned"
            return True
        return False

    def live(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        token: str | None = None,
        paused: bool = False,
        extra: Mapping[str, Any] | None = None,
        state_file: bool = True,
    ) -> LiveControl:
        """Opt in to live control: a small server (the panda's API, ``caviar ctl``) steers this trial.

        ``extra`` adds values beside the params that controls may change. Returns the control (its
        ``url`` and ``token``); calling it again returns the same one.
        """
        if self._live is None:
            from caviar.tune.live import LiveControl

            if extra:
                with self._lock:
                    for name, value in extra.items():
                        self._hp.setdefault(str(name), value)
            self._live = LiveControl(self, host=host, port=port, token=token, paused=paused, state_file=state_file)
        return self._live

    # ---- used by the study
    @property
    def stop_reason(self) -> str | None:
        """'pruned' (the pruner said stop), 'stopped' (a live stop), or None."""
        return self._stop_reason

    def _set_hp(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            old = {k: self._hp.get(k) for k in changes}
            self._hp.update(changes)
            return old

    def _request_stop(self, reason: str) -> None:
        self._stop_reason = self._stop_reason or reason

    def close(self) -> None:
        """Stop the live server, if any."""
        if self._live is not None:
            self._live.close()

    def __repr__(self) -> str:
        return f"Trial(#{self.number}, {dict(self.params)!r})"


def finite_or_none(value: Any) -> float | None:
    """A finite float, or None."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# ------------------------------------------------------------------------------------------ outcomes
def _plain_metric(value: Any) -> Any:
    """A metric as storage keeps it: numbers as floats, text and None as they are, anything else as text."""
    if value is None or isinstance(value, (str, bool)):
        return value
    try:
        return _number("metric", value)
    except ObjectiveError:
        return str(value)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def outcome_of(
    returned: Any, metric: str, maximize: bool, stop_reason: str | None = None, epochs: int = 0
) -> tuple[TrialState, dict[str, Any], float | None, str | None]:
    """What an objective's return value means: (state, metrics, objective to maximize, error).

    A float (or a 0-d array/tensor) is the metric; a dict must hold the metric (its other entries are
    stored too). None, text, a boolean or a non-finite number ends the trial FAILED with the reason.
    A trial told to stop by its pruner ends PRUNED (never the best), one stopped live ends COMPLETE.
    """
    if isinstance(returned, Mapping):
        if metric not in returned:
            keys = ", ".join(map(str, returned)) or "none"
            return TrialState.FAILED, {}, None, f"objective returned a dict without {metric!r} (its keys: {keys})"
        metrics = {str(k): _plain_metric(v) for k, v in returned.items()}
        value = returned[metric]
    else:
        metrics, value = {}, returned
    if value is None:
        reason = f"objective returned None; return {metric} (a number) or a dict holding {metric!r}"
        return TrialState.FAILED, metrics, None, reason
    try:
        number = _number(metric, value)
    except ObjectiveError:
        reason = f"objective returned {_describe(value)} ({type(value).__name__}), not a number for {metric!r}"
        return TrialState.FAILED, metrics, None, reason
    metrics[metric] = number
    if epochs:
        metrics.setdefault("epochs_run", epochs)
    if not math.isfinite(number):
        return TrialState.FAILED, metrics, None, f"objective returned {number} for {metric!r} (not finite)"
    if stop_reason == "pruned":
        return TrialState.PRUNED, metrics, None, None
    return TrialState.COMPLETE, metrics, number if maximize else -number, None


def error_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
