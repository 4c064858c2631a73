"""Recovering killed panda sessions: a session whose process died must not stay RUNNING for good.

A session's trial beats like a tuning worker's (``host:pid:random`` worker id, a heartbeat every 5 s,
paused or not). A session is dead when that process no longer exists on this host, or when its trial
has not beaten for ``stale_after_s`` (another host). Its trial is then closed as FAILED, with the
reason and the last epoch's metrics; its stored epochs and interventions stay as they were, so the
dashboard shows what the session did up to its death. (The weights lived in the dead process: there is
nothing to continue from, so the trial is not requeued.)

Every new session sweeps its storage this way when it starts (:class:`caviar.panda.session.PandaSession`);
:func:`recover_dead_sessions` can be called on any storage.
"""

from __future__ import annotations

from datetime import datetime, timezone

from caviar.storage import Storage, StudyStatus, TrialRecord, TrialState
from caviar.tune.worker import STALE_AFTER_S, is_dead_local

__all__ = ["dead_reason", "recover_dead_sessions"]

#: The metrics copied from a dead session's last stored epoch onto its closed trial.
LAST_EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def dead_reason(trial: TrialRecord, now: datetime, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why the RUNNING trial ``trial``'s session is dead, or None while it may be alive."""
    worker = trial.worker_id or ""
    if worker and is_dead_local(worker):
        return f"the panda session's process is gone (worker {worker}, killed or crashed)"
    beat = trial.heartbeat_at or trial.started_at
    if beat is not None:
        beat = beat if beat.tzinfo is not None else beat.replace(tzinfo=timezone.utc)
        age = (now - beat).total_seconds()
        if age > stale_after_s:
            return f"the panda session stopped beating {age:.0f} s ago (worker {worker or '?'})"
    return None


def recover_dead_sessions(storage: Storage, stale_after_s: float = STALE_AFTER_S) -> list[str]:
    """Close the RUNNING trial of every dead panda session in ``storage`` (FAILED, with the reason and its
    last epoch's metrics) and mark its study COMPLETE; returns the names of the sessions closed."""
    now = datetime.now(timezone.utc)
    closed: list[str] = []
    for record in storage.list_studies():
        if record.kind != "session" or not record.counts.get(TrialState.RUNNING):
            continue
        for trial in storage.trials(record.id, [TrialState.RUNNING]):
            reason = dead_reason(trial, now, stale_after_s)
            if reason is None:
                continue
            rows = storage.curves(record.id, [trial.id]).get(trial.id, [])
            last = rows[-1] if rows else {}
            metrics = {k: last[k] for k in LAST_EPOCH_METRICS if k in last}
            metrics.update(status="panda", epochs_run=len(rows))
            error = f"{reason}; its {len(rows)} stored epoch(s) are kept"
            if storage.finish_trial(trial.id, trial.worker_id or "", TrialState.FAILED, metrics, None, error=error):
                storage.add_event(record.id, "recovered", {"reason": reason, "epochs": len(rows)}, trial_id=trial.id)
                storage.set_study_status(record.id, StudyStatus.COMPLETE)
                closed.append(record.name)
    return closed
