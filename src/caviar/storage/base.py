"""What a study storage does, whatever keeps the data: the interface every caller depends on.

Four jobs: studies (create, resume, find, list, status, delete); the work queue (enqueue WAITING
trials, claim them for a worker, heartbeats, requeue the trials of dead workers, finish trials only
while their worker owns them); what trials leave behind (curves, search boxes, events, artifacts);
and the reads that views build on. ``SqlStorage`` (caviar.storage.sql) is the SQLAlchemy implementation.

Trial states: WAITING -> RUNNING (claimed by a worker, which sends heartbeats) -> COMPLETE, DIVERGED,
PRUNED or FAILED. A RUNNING trial whose heartbeat is too old goes back to WAITING (zombie recovery);
a finish from a worker that no longer owns the trial is refused, so no trial is counted twice.
Every method that writes takes ``now=`` (tests move the clock). See docs/storage.md.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from caviar.storage.records import EventRecord, StudyRecord, TrialEnd, TrialRecord
from caviar.storage.states import StudyStatus, TrialState

__all__ = ["DataDiff", "SpecDiff", "Storage"]

#: ``(stored spec, new spec) -> dotted paths where they differ materially``; the spec layer supplies it.
SpecDiff = Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]]
#: ``(stored fingerprint, new fingerprint) -> what changed, in words``; caviar.data.checks supplies it.
DataDiff = Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]]


class Storage(abc.ABC):
    """A study database. Every method is one short transaction; ``url`` names it (password hidden)."""

    url: str

    # ---- plumbing

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections (the object can still be used; it reconnects)."""

    # ---- studies

    @abc.abstractmethod
    def create_study(
        self,
        name: str,
        spec: Mapping[str, Any],
        seed: int | None = None,
        metric: str = "val_accuracy",
        direction: str = "maximize",
        kind: str = "study",
        now: datetime | None = None,
    ) -> int:
        """Create a study of that ``kind`` ('study', or 'session' for a panda's) and return its id;
        a name already taken is an error."""

    @abc.abstractmethod
    def get_or_create_study(
        self,
        name: str,
        spec: Mapping[str, Any],
        seed: int | None = None,
        metric: str = "val_accuracy",
        direction: str = "maximize",
        differs: SpecDiff | None = None,
        now: datetime | None = None,
        fingerprint: Mapping[str, Any] | None = None,
        data_differs: DataDiff | None = None,
    ) -> int:
        """Resume the study of that name, or create it, in one transaction; returns its id.

        A different seed, metric or direction is an error, and so is a spec for which ``differs``
        (stored, new) names any path; without ``differs`` any change to the spec is. So is data whose
        ``fingerprint`` differs from the stored one (``data_differs`` says how; without it, any change).
        Nothing is written when refused. Otherwise the stored spec is replaced by the new one (a bigger
        budget, say), and a study stored without a fingerprint gets this one.
        """

    @abc.abstractmethod
    def get_study(self, name_or_id: str | int) -> StudyRecord:
        """The study with that name (or id), with its counts; unknown -> StorageError listing the known ones."""

    @abc.abstractmethod
    def list_studies(self) -> list[StudyRecord]:
        """All studies, oldest first, with counts per state and best objective."""

    @abc.abstractmethod
    def set_study_status(self, study_id: int, status: StudyStatus | str) -> None:
        """Record the study's status (a member or its stored value; anything else is a StorageError)."""

    @abc.abstractmethod
    def delete_study(self, name_or_id: str | int) -> None:
        """Delete a study and everything it holds."""

    # ---- the work queue

    @abc.abstractmethod
    def enqueue_trials(self, study_id: int, items: Iterable[Mapping[str, Any]], now: datetime | None = None) -> int:
        """Add WAITING trials; numbers already in the study are skipped. Returns how many were added.

        Each item: ``number``, ``params`` (user variables), optional ``unit`` (point in the unit cube),
        ``round`` (default 0), ``seed``, ``group_key`` (population/static key).
        """

    @abc.abstractmethod
    def claim_trials(
        self,
        study_id: int,
        worker_id: str,
        limit: int = 1,
        group_key: str | None = None,
        same_group: bool = False,
        now: datetime | None = None,
    ) -> list[TrialRecord]:
        """Atomically move up to ``limit`` WAITING trials (lowest numbers first) to RUNNING for this worker.

        ``group_key`` restricts the claim to one population key; ``same_group=True`` claims only trials
        sharing the key of the first waiting one (a population that can train together). A claimed
        trial's curve rows from an earlier, lost attempt are dropped: a re-run starts clean.
        """

    @abc.abstractmethod
    def heartbeat(self, trial_ids: Sequence[int], worker_id: str, now: datetime | None = None) -> list[int]:
        """Refresh the heartbeat of trials this worker runs; returns the ids it still owns.

        A trial missing from the answer was requeued (or finished) behind the worker's back: stop it.
        """

    @abc.abstractmethod
    def requeue_stale(self, study_id: int, timeout_s: float, now: datetime | None = None) -> int:
        """Put RUNNING trials whose heartbeat is older than ``timeout_s`` back to WAITING. Returns how many."""

    @abc.abstractmethod
    def requeue_worker(self, study_id: int, worker_id: str, now: datetime | None = None) -> int:
        """Put the RUNNING trials of one worker back to WAITING (it stopped or died). Returns how many."""

    @abc.abstractmethod
    def finish_trials(self, worker_id: str, ends: Sequence[TrialEnd], now: datetime | None = None) -> list[bool]:
        """Record several trials' ends (a population) in ONE transaction; one flag per end, in order:
        whether that trial was still RUNNING under ``worker_id`` and is now finished.

        ``objective`` is the value the study maximizes; non-finite values are stored as None.
        """

    def finish_trial(
        self,
        trial_id: int,
        worker_id: str,
        state: TrialState,
        metrics: Mapping[str, Any] | None = None,
        objective: float | None = None,
        curve: Sequence[Mapping[str, Any]] | None = None,
        error: str | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Record one trial's end. False (and nothing changed) unless the trial is still RUNNING and owned
        by ``worker_id``: a worker that lost its trial cannot overwrite it."""
        return self.finish_trials(worker_id, [TrialEnd(trial_id, state, metrics, objective, curve, error)], now)[0]

    @abc.abstractmethod
    def add_curves(
        self, rows_by_trial: Mapping[int, Sequence[Mapping[str, Any]]], worker_id: str | None = None
    ) -> list[int]:
        """Write the per-epoch rows of several trials in ONE transaction (a population's epoch); an epoch
        written twice is replaced. Returns the ids written: with ``worker_id``, only the trials that
        worker still owns (RUNNING)."""

    def add_curve_rows(self, trial_id: int, rows: Sequence[Mapping[str, Any]], worker_id: str | None = None) -> bool:
        """``add_curves`` for one trial; returns whether its rows were written."""
        return trial_id in self.add_curves({trial_id: rows}, worker_id)

    @abc.abstractmethod
    def drop_curve_after(self, trial_id: int, epoch: int) -> int:
        """Delete a trial's curve rows after ``epoch`` (a panda rollback abandons them); returns how many."""

    # ---- boxes, events, artifacts

    @abc.abstractmethod
    def add_box(self, study_id: int, round: int, box: Mapping[str, Any], now: datetime | None = None) -> None:
        """Store (or replace) the search box of one coarse-to-fine round."""

    @abc.abstractmethod
    def boxes(self, study_id: int) -> dict[int, dict[str, Any]]:
        """Round -> box, in round order."""

    @abc.abstractmethod
    def add_event(
        self,
        study_id: int,
        kind: str,
        payload: Any = None,
        trial_id: int | None = None,
        step: int | None = None,
        now: datetime | None = None,
    ) -> int:
        """Append an event (an intervention, a note) and return its id; ids only grow."""

    @abc.abstractmethod
    def events(
        self, study_id: int, trial_id: int | None = None, since_id: int | None = None, kind: str | None = None
    ) -> list[EventRecord]:
        """Events in the order they were added; ``since_id`` returns only newer ones (for polling)."""

    @abc.abstractmethod
    def save_artifact(self, trial_id: int, name: str, data: bytes, now: datetime | None = None) -> None:
        """Store bytes (e.g. a trial's weights as .npz) under a name, replacing any previous ones."""

    @abc.abstractmethod
    def load_artifact(self, trial_id: int, name: str) -> bytes:
        """The bytes stored under that name; missing -> StorageError."""

    @abc.abstractmethod
    def artifact_names(self, trial_id: int) -> list[str]:
        """Names of the artifacts stored for a trial."""

    # ---- reads

    @abc.abstractmethod
    def trials(self, study_id: int, states: Collection[TrialState] | None = None) -> list[TrialRecord]:
        """The study's trials by number, optionally only those in ``states``."""

    @abc.abstractmethod
    def trial(self, trial_id: int) -> TrialRecord:
        """One trial by id; unknown -> StorageError."""

    @abc.abstractmethod
    def best_trial(self, study_id: int) -> TrialRecord | None:
        """The COMPLETE trial with the highest objective (lowest number on ties), or None."""

    @abc.abstractmethod
    def counts(self, study_id: int) -> dict[TrialState, int]:
        """Number of trials in each state (every state present, zeros included)."""

    @abc.abstractmethod
    def next_number(self, study_id: int) -> int:
        """One more than the highest trial number (0 for an empty study)."""

    @abc.abstractmethod
    def curves(self, study_id: int, trial_ids: Collection[int] | None = None) -> dict[int, list[dict[str, Any]]]:
        """Trial id -> its per-epoch rows (dicts with epoch, the four curves as floats, and extras)."""
