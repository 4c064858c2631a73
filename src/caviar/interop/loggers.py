"""MLflow and TensorBoard loggers: parameters, per-epoch metrics and the best model, for fits and studies.

Each logger is three callbacks in one object:

- a **study callback**: ``optimize(..., callbacks=[logger])`` calls ``logger(storage, trial)`` as each
  trial ends (one MLflow run / one TensorBoard folder per trial: its params, its curve epoch by epoch,
  its final metrics and state; the best trial so far also gets its stored artifacts, e.g. its model);
  ``logger.log_study(study)`` does the same afterwards for any study, caviar's own included (their best
  trial's ``model.npz``).
- a **trainer callback** for the estimator: ``Classifier(...).fit(X, y, callbacks=[logger])`` streams each
  epoch's metrics; ``logger.finish(clf)`` then adds the parameters and the model file and closes the run.

``MLflowLogger`` needs ``caviar[mlflow]``, ``TensorBoardLogger`` ``caviar[tensorboard]``.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from caviar.errors import CaviarError
from caviar.storage import Storage, TrialRecord


def _numbers(row: Mapping[str, Any], skip: Sequence[str] = ("epoch",)) -> dict[str, float]:
    """The finite numeric entries of a row (curve rows read back missing values as NaN)."""
    out = {}
    for k, v in row.items():
        if k in skip or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(float(v)):
            out[str(k)] = float(v)
    return out


def _model_bytes(clf: Any) -> bytes:
    from caviar.model_io import save_classifier

    buffer = io.BytesIO()
    save_classifier(clf, buffer)
    return buffer.getvalue()


class _StudyLogger:
    """What both loggers share: turning a stored trial (and a fit) into params, steps and artifacts."""

    def __call__(self, storage: Storage, trial: TrialRecord) -> None:
        """Log one finished trial (the ``optimize`` callback); the best so far also gets its artifacts."""
        study = storage.get_study(trial.study_id)
        curve = storage.curves(trial.study_id, [trial.id]).get(trial.id, [])
        best = storage.best_trial(trial.study_id)
        artifacts = _artifacts(storage, trial) if best is not None and best.id == trial.id else {}
        self.log_trial(study.name, trial, curve, artifacts)

    def log_study(self, study: Any) -> int:
        """Log every finished trial of a study (a ``caviar.tune`` Study); the best one with its artifacts."""
        storage, best = study.storage, study.best_trial
        curves = study.curves()
        n = 0
        for t in study.trials:
            if not t.finished:
                continue
            artifacts = _artifacts(storage, t) if best is not None and t.id == best.id else {}
            self.log_trial(study.name, t, curves.get(t.id, []), artifacts)
            n += 1
        return n

    def log_trial(
        self, study: str, trial: TrialRecord, curve: Sequence[Mapping[str, Any]], artifacts: Mapping[str, bytes]
    ) -> None:
        raise NotImplementedError


def _artifacts(storage: Storage, trial: TrialRecord) -> dict[str, bytes]:
    return {name: storage.load_artifact(trial.id, name) for name in storage.artifact_names(trial.id)}


def _param_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


# ------------------------------------------------------------------------------------------ MLflow
class MLflowLogger(_StudyLogger):
    """Trials and fits as MLflow runs: params, per-epoch metrics (``step`` = epoch), the best model as an artifact.

    ``tracking_uri`` is any MLflow tracking URI (a local folder as ``file:///...``, a server); runs go to
    ``experiment`` (created when missing). The logger pickles, so worker processes can use it.
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str = "caviar") -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self._fit_run: str | None = None
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                from mlflow.tracking import MlflowClient
            except ImportError:
                raise CaviarError("MLflowLogger needs mlflow: pip install 'caviar[mlflow]'") from None
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def experiment_id(self) -> str:
        """The experiment's id (created when missing)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = self.client.get_experiment_by_name(self.experiment)
            return found.experiment_id if found is not None else self.client.create_experiment(self.experiment)

    def _run(self, name: str, tags: Mapping[str, str]) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return str(self.client.create_run(self.experiment_id(), run_name=name, tags=dict(tags)).info.run_id)

    def _log(
        self, run_id: str, params: Mapping[str, Any] | None = None, steps: Sequence[tuple[int, dict]] = ()
    ) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for step, row in steps for k, v in row.items()]
        plist = [Param(str(k), _param_text(v)[:6000]) for k, v in dict(params or {}).items()]
        for i in range(0, max(len(metrics), 1), 900):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(run_id, metrics=metrics[i : i + 900], params=plist if i == 0 else [])

    def _artifacts(self, run_id: str, artifacts: Mapping[str, bytes]) -> None:
        if not artifacts:
            return
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in artifacts.items():
                path = Path(tmp) / Path(name).name
                path.write_bytes(data)
                self.client.log_artifact(run_id, str(path))

    def log_trial(
        self, study: str, trial: TrialRecord, curve: Sequence[Mapping[str, Any]], artifacts: Mapping[str, bytes]
    ) -> None:
        """One run for the trial: params, each epoch's metrics, its final metrics, its state, its artifacts."""
        tags = {"caviar.study": study, "caviar.trial": str(trial.number), "caviar.state": str(trial.state)}
        if trial.error:
            tags["caviar.error"] = trial.error[:5000]
        if artifacts:
            tags["caviar.best"] = "true"
        run_id = self._run(f"{study}#{trial.number}", tags)
        steps = [(int(r["epoch"]), _numbers(r)) for r in curve]
        seen = {k for _, row in steps for k in row}
        final = {k: v for k, v in _numbers(trial.metrics).items() if k not in seen}
        if trial.objective is not None:
            final["objective"] = float(trial.objective)
        self._log(run_id, trial.params, [*steps, (0, final)] if final else steps)
        self._artifacts(run_id, artifacts)
        status = (
            "FINISHED" if str(trial.state) == "COMPLETE" else "FAILED" if str(trial.state) == "FAILED" else "KILLED"
        )
        self.client.set_terminated(run_id, status)

    # ---- the estimator
    def on_epoch_end(self, trainer: Any, rows: Mapping[int, Mapping[str, float]]) -> None:
        """Trainer callback: each epoch's metrics of the (first) model, in one run per fit."""
        if self._fit_run is None:
            from dataclasses import asdict

            self._fit_run = self._run("fit", {"caviar.kind": "fit"})
            self._log(self._fit_run, asdict(trainer.config))
        row = next(iter(rows.values()), {})
        self._log(self._fit_run, steps=[(int(trainer.epoch) - 1, _numbers(row))])

    def finish(self, clf: Any = None) -> str | None:
        """End the fit's run, with the estimator's params and its model file (``model.npz``); its run id."""
        run_id, self._fit_run = self._fit_run, None
        if run_id is None:
            return None
        if clf is not None:
            from mlflow.entities import Param

            params = {k: v for k, v in clf.get_params().items() if v is not None}

            known = {p for p in self.client.get_run(run_id).data.params}
            extra = [Param(k, _param_text(v)) for k, v in params.items() if k not in known]
            if extra:
                self.client.log_batch(run_id, params=extra)
            self._artifacts(run_id, {"model.npz": _model_bytes(clf)})
        self.client.set_terminated(run_id, "FINISHED")
        return run_id


# ------------------------------------------------------------------------------------------ TensorBoard
class _ScalarWriter:
    """Classic scalar summaries in a TensorBoard event file (what TensorBoard's scalars tab and
    ``EventAccumulator.Scalars`` read), written with tensorboard's own event writer: no TensorFlow, no torch."""

    def __init__(self, folder: Path) -> None:
        try:
            from tensorboard.compat.proto.event_pb2 import Event
            from tensorboard.compat.proto.summary_pb2 import Summary
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError:
            raise CaviarError("TensorBoardLogger needs tensorboard: pip install 'caviar[tensorboard]'") from None
        self._event, self._summary = Event, Summary
        self._writer = EventFileWriter(str(folder))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        summary = self._summary(value=[self._summary.Value(tag=tag, simple_value=float(value))])
        self._writer.add_event(self._event(wall_time=time.time(), step=int(step), summary=summary))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class TensorBoardLogger(_StudyLogger):
    """Trials and fits as TensorBoard event files under ``log_dir``: one folder per trial (``<study>/trial-N``).

    Per-epoch metrics are scalars (step = epoch); numeric params are scalars ``params/<name>`` at step 0;
    every param, the state and the final metrics are also in that folder's ``params.json``. The best
    trial's artifacts are written to ``<study>/best/``.
    """

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = str(log_dir)
        self._fit_writer: Any = None
        self._fit_dir: Path | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"log_dir": self.log_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    @staticmethod
    def _writer(folder: Path) -> _ScalarWriter:
        folder.mkdir(parents=True, exist_ok=True)
        return _ScalarWriter(folder)

    def log_trial(
        self, study: str, trial: TrialRecord, curve: Sequence[Mapping[str, Any]], artifacts: Mapping[str, bytes]
    ) -> None:
        """The trial's folder: its curve and numeric params as scalars, ``params.json``, and its artifacts if best."""
        folder = Path(self.log_dir) / study / f"trial-{trial.number}"
        writer = self._writer(folder)
        try:
            for name, value in _numbers(trial.params).items():
                writer.add_scalar(f"params/{name}", value, 0)
            for r in curve:
                for name, value in _numbers(r).items():
                    writer.add_scalar(name, value, int(r["epoch"]))
            writer.flush()
        finally:
            writer.close()
        info = {
            "study": study,
            "number": trial.number,
            "state": str(trial.state),
            "params": trial.params,
            "metrics": trial.metrics,
            "objective": trial.objective,
            "error": trial.error,
        }
        (folder / "params.json").write_text(json.dumps(info, indent=2, default=str))
        if artifacts:
            best = Path(self.log_dir) / study / "best"
            best.mkdir(parents=True, exist_ok=True)
            for name, data in artifacts.items():
                (best / Path(name).name).write_bytes(data)
            (best / "trial.json").write_text(json.dumps(info, indent=2, default=str))

    # ---- the estimator
    def on_epoch_end(self, trainer: Any, rows: Mapping[int, Mapping[str, float]]) -> None:
        """Trainer callback: each epoch's metrics of the (first) model as scalars, under ``log_dir/fit-<time>``."""
        if self._fit_writer is None:
            self._fit_dir = Path(self.log_dir) / f"fit-{time.strftime('%Y%m%d-%H%M%S')}"
            self._fit_writer = self._writer(self._fit_dir)
        row = next(iter(rows.values()), {})
        for name, value in _numbers(row).items():
            self._fit_writer.add_scalar(name, value, int(trainer.epoch) - 1)

    def finish(self, clf: Any = None) -> Path | None:
        """Close the fit's event file; with ``clf``, write its params (``params.json``) and ``model.npz`` beside it."""
        writer, folder = self._fit_writer, self._fit_dir
        self._fit_writer = self._fit_dir = None
        if writer is None or folder is None:
            return None
        if clf is not None:
            for name, value in _numbers(clf.get_params()).items():
                writer.add_scalar(f"params/{name}", value, 0)
            (folder / "params.json").write_text(json.dumps(clf.get_params(), indent=2, default=str))
            (folder / "model.npz").write_bytes(_model_bytes(clf))
        writer.flush()
        writer.close()
        return folder
