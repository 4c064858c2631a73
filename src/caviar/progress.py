"""The live terminal display of ``caviar tune``: trials done, and each running population epoch by epoch.

One line for the study (trials done of the total, starting at what a resumed study had already done;
the best value so far; an ETA) and one line per population being trained (epoch k of N, members
left, the best value among its last epoch's rows, seconds an epoch). Epoch ends come from two
sources, merged by population (keyed by its lowest trial number): the worker in this process calls
:meth:`TuneDisplay.on_epoch`; populations in worker processes or Ray tasks are read from storage's
curves whenever the study's progress callback runs (every half second while they train).

The ETA is measured, not guessed: the mean seconds of the epochs seen so far, times the epochs
left (the running populations' own, then the waiting trials' in populations of the size seen),
shared among the populations training side by side.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from caviar.errors import StorageError
from caviar.storage import Storage, TrialRecord, TrialState
from caviar.tune.worker import PopulationEpoch, best_of


def eta_seconds(
    epoch_s: float | None, epochs_left_running: Sequence[int], waiting: int, population: int, epochs: int
) -> float | None:
    """Seconds left: ``epoch_s`` (the mean measured epoch) times the epochs still to train, in parallel.

    ``epochs_left_running``: each running population's epochs left; ``waiting`` trials not yet
    training go in populations of ``population`` trials of ``epochs`` epochs each. Running
    populations train side by side, so the waiting work is shared among them. None before any
    epoch was measured.
    """
    if epoch_s is None or not math.isfinite(epoch_s):
        return None
    lanes = max(1, len(epochs_left_running))
    running = max(epochs_left_running, default=0)
    later = math.ceil(max(0, waiting) / max(1, population)) * max(0, epochs)
    return epoch_s * (running + later / lanes)


def clock(seconds: float | None) -> str:
    """``1:02:03`` / ``4:05``; ``…`` while unknown."""
    if seconds is None:
        return "…"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_metric(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


@dataclass
class Population:
    """What the display knows of one running population."""

    numbers: tuple[int, ...]
    epochs: int
    epoch: int = 0
    members_left: int = 0
    best: float | None = None
    seen_at: float = field(default_factory=time.perf_counter)  # when its last epoch end was seen
    task: TaskID | None = None

    @property
    def label(self) -> str:
        lo, hi = min(self.numbers), max(self.numbers)
        return f"#{lo}" if lo == hi else f"#{lo}-#{hi}"


class TuneDisplay:
    """Progress callback of :func:`caviar.tune.study.run_study` that draws rich's live display."""

    def __init__(
        self,
        console: Console,
        *,
        total: int,
        done: int,
        metric: str,
        epochs: int,
        storage: Storage | Callable[[], Storage] | None = None,
        study: str | None = None,
        clock_fn: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.console, self.total, self.metric, self.epochs = console, total, metric, epochs
        self.done_at_start = self.done = done
        # A storage, or how to open one (read-only, on the first poll: ``caviar tune`` must not create
        # the storage before the study's data passed its checks).
        self._storage, self.study = storage, study
        self.now = clock_fn
        self.best: float | None = None
        self.populations: dict[int, Population] = {}
        self.epoch_seconds: list[tuple[float, int, bool]] = []  # (seconds, epochs, from a population's start)
        self.running = 0
        self.started = False
        self.progress = Progress(
            TextColumn("[bold]{task.description}", justify="right"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=False,
            refresh_per_second=8,
        )
        self.trials_task = self.progress.add_task("trials", total=total, completed=done, info=self._trials_info())

    # --------------------------------------------------------------------------------- context
    def __enter__(self) -> TuneDisplay:
        self.progress.start()
        self.started = True
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop drawing; a display never started (or already stopped) prints nothing."""
        if self.started:
            self.progress.stop()
            self.started = False

    # -------------------------------------------------------------------------- the two sources
    def on_epoch(self, ev: PopulationEpoch) -> None:
        """An epoch end of a population this process trains."""
        self._seen(ev.numbers, ev.epoch, ev.epochs, ev.members_left, ev.best)
        self._redraw()

    def __call__(self, counts: dict[TrialState, int], best: TrialRecord | None) -> None:
        """The study's progress: counts per state and the best trial; then what storage's curves say."""
        self.done = sum(v for k, v in counts.items() if k.finished)
        self.running = counts.get(TrialState.RUNNING, 0)
        if best is not None:
            value = best.metrics.get(self.metric)
            self.best = float(value) if isinstance(value, (int, float)) else self.best
        self._poll_storage()
        self._redraw()

    @property
    def storage(self) -> Storage | None:
        """The storage read from, opened on first use when given as an opener (None until it opens)."""
        if callable(self._storage) and not isinstance(self._storage, Storage):
            try:
                self._storage = self._storage()
            except StorageError:  # not there yet: try again at the next poll
                return None
        return self._storage

    def _poll_storage(self) -> None:
        """Populations trained elsewhere (worker processes, Ray): their RUNNING trials and curves."""
        if self.study is None or self.storage is None:
            return
        try:
            store = self.storage
            assert store is not None
            study_id = store.get_study(self.study).id
            running = store.trials(study_id, [TrialState.RUNNING])
            curves = store.curves(study_id, [t.id for t in running]) if running else {}
        except StorageError:
            return
        groups: dict[str, list[TrialRecord]] = {}
        for t in running:
            groups.setdefault(t.worker_id or "", []).append(t)
        live = set()
        for trials in groups.values():
            numbers = tuple(sorted(t.number for t in trials))
            live.add(numbers[0])
            rows = [curves.get(t.id, []) for t in trials]
            epoch = max((int(r[-1]["epoch"]) + 1 for r in rows if r), default=0)
            last = [r[-1] for r in rows if r and int(r[-1]["epoch"]) + 1 == epoch]
            self._seen(numbers, epoch, self.epochs, len(last), best_of(last, self.metric))
        for key in [k for k in self.populations if k not in live]:  # finished (or requeued)
            self._drop(key)

    # ------------------------------------------------------------------------------ bookkeeping
    def _seen(self, numbers: tuple[int, ...], epoch: int, epochs: int, left: int, best: float | None) -> None:
        """A population at ``epoch`` of ``epochs``; the time since its previous epoch end is measured."""
        now = self.now()
        pop = self.populations.get(numbers[0])
        if pop is None:  # first sight: the clock starts here
            self.populations[numbers[0]] = Population(numbers, epochs, epoch, left, best, seen_at=now)
            return
        if epoch > pop.epoch:
            self.epoch_seconds.append((now - pop.seen_at, epoch - pop.epoch, pop.epoch == 0))
            pop.epoch, pop.members_left, pop.best, pop.seen_at = epoch, left, best, now
        pop.epochs = epochs

    def _drop(self, key: int) -> None:
        pop = self.populations.pop(key)
        if pop.task is not None:
            self.progress.remove_task(pop.task)

    @property
    def epoch_s(self) -> float | None:
        """Seconds an epoch, measured over the last 20 intervals seen; an interval from a population's
        start (it includes starting a worker process and loading data) counts only while there is
        nothing else."""
        steady = [m for m in self.epoch_seconds if not m[2]] or self.epoch_seconds
        recent = steady[-20:]
        epochs = sum(n for _, n, _ in recent)
        return sum(s for s, _, _ in recent) / epochs if epochs else None

    def eta(self) -> float | None:
        pops = list(self.populations.values())
        size = max((len(p.numbers) for p in pops), default=1)
        in_flight = sum(len(p.numbers) for p in pops)
        waiting = self.total - self.done - max(in_flight, self.running)
        return eta_seconds(self.epoch_s, [p.epochs - p.epoch for p in pops], waiting, size, self.epochs)

    # ----------------------------------------------------------------------------------- drawing
    def _trials_info(self) -> str:
        parts = []
        if self.best is not None:
            parts.append(f"best {self.metric} {fmt_metric(self.best)}")
        parts.append(f"ETA {clock(self.eta()) if self.populations or self.epoch_seconds else '…'}")
        return " · ".join(parts)

    def _redraw(self) -> None:
        self.progress.update(self.trials_task, completed=min(self.done, self.total), info=self._trials_info())
        for pop in self.populations.values():
            info = self.population_info(pop)
            if pop.task is None:
                pop.task = self.progress.add_task(
                    f"{pop.label} epoch", total=pop.epochs, completed=pop.epoch, info=info
                )
            else:
                self.progress.update(pop.task, total=pop.epochs, completed=pop.epoch, info=info)

    def population_info(self, pop: Population) -> str:
        """``8 of 8 left · best val_accuracy 0.93 · 0.41 s/epoch`` (the bar before it: epoch 5/30)."""
        per = f" · {self.epoch_s:.2g} s/epoch" if self.epoch_s is not None else ""
        return f"{pop.members_left} of {len(pop.numbers)} left · best {self.metric} {fmt_metric(pop.best)}{per}"


def summary_line(done: int, total: int) -> str:
    """``12 of 48 trials complete``."""
    return f"{done} of {total} trials complete"
