"""The two vocabularies storage keeps: a trial's state and a study's status.

Both are ``str`` enums whose values are exactly the strings caviar 0.1 stored, so old databases read
back unchanged and ``str(state)`` is the bare value (what JSON, the dashboard and the golden fixture see).
"""

from __future__ import annotations

import enum

__all__ = ["FINISHED_STATES", "StudyStatus", "TrialState"]


class _Vocabulary(str, enum.Enum):
    """A str enum whose ``str()`` and ``format()`` give the stored value (``enum.StrEnum`` is 3.11+)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class TrialState(_Vocabulary):
    """WAITING -> RUNNING (claimed by a worker) -> one of the four final states."""

    WAITING = "WAITING"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    DIVERGED = "DIVERGED"
    PRUNED = "PRUNED"
    FAILED = "FAILED"

    @property
    def finished(self) -> bool:
        """Whether a trial in this state will never run again."""
        return self in FINISHED_STATES


#: The final states, in the order messages list them.
FINISHED_STATES = (TrialState.COMPLETE, TrialState.DIVERGED, TrialState.PRUNED, TrialState.FAILED)


class StudyStatus(_Vocabulary):
    """A study's status: 'created' by storage, RUNNING while a loop (or a panda) works on it, then COMPLETE.

    The mixed case is what 0.1 stored; a value in another case (e.g. 'running') reads as its member.
    """

    CREATED = "created"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"

    @classmethod
    def _missing_(cls, value: object) -> StudyStatus | None:
        text = str(value).casefold()
        return next((member for member in cls if member.value.casefold() == text), None)
