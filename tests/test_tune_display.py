"""``caviar tune`` in a terminal: epoch-level progress with an ETA, the resume notice, Ctrl-C, and tables
that fit (the dry run at 80 columns) or are never cut (``caviar show`` piped).

Nothing sleeps to synchronize: the SIGINT test polls storage until a curve row is there, and the
display is read at each epoch end the worker reports.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console
from threadpoolctl import threadpool_limits

import caviar.cli as cli_module
from caviar.progress import TuneDisplay, clock, eta_seconds
from caviar.storage import TrialState, open_storage
from caviar.tune.study import Study, run_study
from caviar.tune.worker import PopulationEpoch
from cli_runner import ANSI, CliResult, run_caviar

SRC = Path(__file__).resolve().parents[1] / "src"

SPEC = """
[study]
name = "{name}"
seed = 0
[data]
dataset = "digits"
[model]
hidden = [16]
[training]
epochs = {epochs}
batch_size = {batch}
[search]
trials = {trials}
max_population = 3
[space]
learning_rate = {{ low = 1e-4, high = 3e-2, scale = "log" }}
"""

WIDE = """
beta1 = { low = 0.8, high = 0.999, scale = "one_minus_log" }
beta2 = { low = 0.99, high = 0.99999, scale = "one_minus_log" }
l2 = { low = 1e-7, high = 1e-2, scale = "log" }
dropout = { low = 0.0, high = 0.5 }
epsilon = { low = 1e-9, high = 1e-6, scale = "log" }
"""


def write_spec(folder: Path, name: str, epochs: int = 3, trials: int = 6, batch: int = 128, wide: bool = False):
    spec = folder / f"{name}.toml"
    spec.write_text(SPEC.format(name=name, epochs=epochs, trials=trials, batch=batch) + (WIDE if wide else ""))
    return spec


def run_cli(monkeypatch, capsys, *args) -> CliResult:
    return run_caviar(capsys, monkeypatch, *args)


# ------------------------------------------------------------------------------------ the display
def test_eta_is_measured_epochs_times_the_work_left():
    assert eta_seconds(None, [3], 10, 3, 5) is None
    assert eta_seconds(2.0, [3], 0, 3, 5) == 6.0  # the running population's 3 epochs left
    assert eta_seconds(2.0, [3], 6, 3, 5) == 2.0 * (3 + 2 * 5)  # then two populations of 5 epochs
    assert eta_seconds(2.0, [3, 1], 6, 3, 5) == 2.0 * (3 + 10 / 2)  # two side by side share the rest
    assert clock(75) == "1:15" and clock(3725) == "1:02:05" and clock(None) == "…"


def render(display: TuneDisplay) -> str:
    out = Console(record=True, width=140, force_terminal=True, color_system=None, file=io.StringIO())
    out.print(display.progress.get_renderable())
    return out.export_text()


def test_display_updates_within_a_population_and_shows_an_eta(tmp_path):
    """The real study loop feeds the display: each epoch end of a population moves its line and the
    ETA while the trials bar has not moved yet."""
    spec = write_spec(tmp_path, "live", epochs=4, trials=6)
    console = Console(record=True, width=140, force_terminal=True, file=io.StringIO())
    store = open_storage(f"sqlite:///{tmp_path / 'live.db'}")
    display = TuneDisplay(console, total=6, done=0, metric="val_accuracy", epochs=4, storage=store, study="live")
    frames: list[tuple[PopulationEpoch, str]] = []
    heard = display.on_epoch

    def spy(ev: PopulationEpoch) -> None:
        heard(ev)
        frames.append((ev, render(display)))

    display.on_epoch = spy  # type: ignore[method-assign]
    # one BLAS thread: one core's worth, so the populations train one after the other (with more,
    # small populations train side by side: test_display_shows_populations_trained_side_by_side)
    with display, threadpool_limits(limits=1, user_api="blas"):
        run_study(spec, storage=str(tmp_path / "live.db"), on_progress=display)
    first = [(ev, text) for ev, text in frames if ev.numbers == (0, 1, 2)]
    assert [ev.epoch for ev, _ in first] == [1, 2, 3, 4] and all(ev.epochs == 4 for ev, _ in first)
    for ev, text in first:
        assert re.search(rf"#0-#2 epoch .* {ev.epoch}/4 3 of 3 left · best val_accuracy 0\.\d+", text), text
        assert "0/6" in text  # inside the first population: the trials bar has not moved
    assert "ETA …" in first[0][1]  # nothing measured yet at the first epoch end
    assert re.search(r"ETA \d+:\d\d", first[1][1]) and "s/epoch" in first[1][1]  # measured from the second on
    second = [text for ev, text in frames if ev.numbers == (3, 4, 5)]
    assert second and all("3/6" in text for text in second) and "#0-#2" not in second[-1]  # the first is done
    assert re.search(r"best val_accuracy 0\.\d+ · ETA", second[0])


def test_display_shows_populations_trained_side_by_side_on_threads(tmp_path, monkeypatch):
    """Where helpers cannot be forked: two small populations, each on a thread of its own; every epoch
    end of both reaches the display (one at a time, in each population's order), the bar ends at 6/6."""
    import caviar.tune.worker as worker_module

    monkeypatch.setattr(worker_module, "can_fork", lambda: False)  # as on a system without fork
    spec = write_spec(tmp_path, "side", epochs=4, trials=6)
    console = Console(record=True, width=140, force_terminal=True, file=io.StringIO())
    store = open_storage(f"sqlite:///{tmp_path / 'side.db'}")
    display = TuneDisplay(console, total=6, done=0, metric="val_accuracy", epochs=4, storage=store, study="side")
    frames: list[tuple[PopulationEpoch, str]] = []
    threads: dict[tuple[int, ...], set[str]] = {}
    heard = display.on_epoch

    def spy(ev: PopulationEpoch) -> None:
        heard(ev)
        frames.append((ev, render(display)))
        threads.setdefault(ev.numbers, set()).add(threading.current_thread().name)

    display.on_epoch = spy  # type: ignore[method-assign]
    with display, threadpool_limits(limits=2, user_api="blas"):
        run_study(spec, storage=str(tmp_path / "side.db"), on_progress=display)
    for numbers in ((0, 1, 2), (3, 4, 5)):
        assert [ev.epoch for ev, _ in frames if ev.numbers == numbers] == [1, 2, 3, 4], numbers
    (first,), (second,) = threads[(0, 1, 2)], threads[(3, 4, 5)]
    assert first != second and first.startswith("pop") and second.startswith("pop"), threads
    assert "6/6" in render(display)


def test_populations_train_side_by_side_in_a_forked_helper(tmp_path):
    """On two cores with two populations waiting, one trains here (its epochs reach the display) and
    one in a helper forked beside this process (its own worker id and pid; its epochs are in storage);
    the bar ends at 6/6 and every trial ran once, with the numbers of a one-core run."""
    spec = write_spec(tmp_path, "forked", epochs=4, trials=6)
    console = Console(record=True, width=140, force_terminal=True, file=io.StringIO())
    store = open_storage(f"sqlite:///{tmp_path / 'forked.db'}")
    display = TuneDisplay(console, total=6, done=0, metric="val_accuracy", epochs=4, storage=store, study="forked")
    heard: list[PopulationEpoch] = []
    on_epoch = display.on_epoch

    def spy(ev: PopulationEpoch) -> None:
        on_epoch(ev)
        heard.append(ev)

    display.on_epoch = spy  # type: ignore[method-assign]
    with display, threadpool_limits(limits=2, user_api="blas"):
        study = run_study(spec, storage=str(tmp_path / "forked.db"), on_progress=display)
    here = {ev.numbers for ev in heard}
    assert len(here) == 1 and [ev.epoch for ev in heard] == [1, 2, 3, 4]  # one population trained here
    records = store.trials(store.get_study("forked").id)
    pids = {r.number: int(r.worker_id.split(":")[1]) for r in records}
    mine = set(next(iter(here)))
    assert {pids[n] for n in mine} == {os.getpid()} and os.getpid() not in {pids[n] for n in set(pids) - mine}
    assert all(r.state is TrialState.COMPLETE and r.attempts == 1 for r in records)
    assert all(len(curve) == 4 for curve in store.curves(store.get_study("forked").id).values())
    assert "6/6" in render(display)
    with threadpool_limits(limits=1, user_api="blas"):  # one core: both populations here, one after the other
        alone = run_study(spec, storage=str(tmp_path / "alone.db"))
    assert [t.objective for t in alone.trials] == [t.objective for t in study.trials]


def test_display_reads_worker_processes_from_storage(tmp_path):
    """Populations trained in other processes: their RUNNING trials' curves in storage give the line."""
    spec = write_spec(tmp_path, "elsewhere", epochs=5, trials=3)
    store = open_storage(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    from caviar.tune.planning import resolve_spec

    resolved = resolve_spec(spec, storage=str(tmp_path / "elsewhere.db"))
    study_id = store.create_study("elsewhere", resolved.to_dict(), seed=0, metric="val_accuracy")
    store.enqueue_trials(
        study_id, [{"number": k, "params": {"learning_rate": 0.01}, "group_key": "g"} for k in range(3)]
    )
    claimed = store.claim_trials(study_id, "otherhost:1:abc", limit=3)
    now = [100.0]
    display = TuneDisplay(
        Console(file=io.StringIO()), total=3, done=0, metric="val_accuracy", epochs=5,
        storage=store, study="elsewhere", clock_fn=lambda: now[0],
    )  # fmt: skip
    counts = store.counts(study_id)
    display(counts, None)
    for epoch in range(2):
        now[0] += 3.0
        store.add_curves(
            {t.id: [{"epoch": epoch, "val_accuracy": 0.5 + 0.1 * epoch + 0.01 * t.number}] for t in claimed}
        )
        display(counts, None)
    pop = display.populations[0]
    assert (pop.epoch, pop.epochs, pop.members_left, pop.best) == (2, 5, 3, pytest.approx(0.62))
    assert display.epoch_s == pytest.approx(3.0) and display.eta() == pytest.approx(9.0)
    assert "2/5" in render(display) and "ETA 0:09" in render(display)
    store.finish_trials("otherhost:1:abc", [])
    for t in claimed:
        store.finish_trial(t.id, "otherhost:1:abc", TrialState.COMPLETE, {"val_accuracy": 0.6}, 0.6, [])
    display(store.counts(study_id), store.best_trial(study_id))
    assert not display.populations and "3/3" in render(display)


# ------------------------------------------------------------------------------------ resume, SIGINT
def test_resume_notice_and_a_bar_that_starts_at_the_completed_count(tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path, "again", epochs=1, trials=3)
    run_study(spec)
    starts: list[int] = []
    init = TuneDisplay.__init__

    def spy(self, *a, **kw):
        starts.append(kw["done"])
        init(self, *a, **kw)

    monkeypatch.setattr(TuneDisplay, "__init__", spy)
    code, out, err = run_cli(monkeypatch, capsys, "tune", spec, "--trials", "6")
    assert code == 0, err
    assert "resuming study again: 3 of 6 trials complete" in out
    assert starts == [3]
    assert Study(str(tmp_path / "again.db"), "again").counts()[TrialState.COMPLETE] == 6


@pytest.mark.parametrize("to_the_group", [False, True], ids=["to-the-process", "to-the-process-group"])
def test_sigint_stops_cleanly_and_says_how_to_resume(tmp_path, to_the_group):
    """Ctrl-C: to the study's process alone, or as a terminal sends it, to its whole process group (the
    forked helper training the other population gets it too): either way every trial goes back to the
    queue, nothing prints a traceback, and the command says how to resume."""
    spec = write_spec(tmp_path, "stopme", epochs=400, trials=6, batch=16)
    db = tmp_path / "stopme.db"
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "100"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "caviar", "tune", str(spec), "--storage", str(db)],
        stdin=slave, stdout=slave, stderr=slave, env=env, cwd=tmp_path, close_fds=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job would ignore it
        start_new_session=to_the_group,  # its own group, so that the signal reaches only it and its helper
    )  # fmt: skip
    os.close(slave)
    out = bytearray()

    def drain(timeout: float) -> bool:
        """Read what the terminal shows; False once it is closed."""
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(master, 65536)
        except OSError:
            return False
        out.extend(chunk)
        return bool(chunk)

    def has_a_curve_row() -> bool:
        if not db.exists():
            return False
        store = open_storage(f"sqlite:///{db}")
        try:
            study_id = store.get_study("stopme").id
        except Exception:
            return False
        return any(store.curves(study_id).values())

    deadline = time.monotonic() + 120
    while not has_a_curve_row():  # poll storage (the select bounds each look; it is not the synchronization)
        assert proc.poll() is None and time.monotonic() < deadline, bytes(out).decode(errors="replace")
        drain(0.1)
    while b"epoch" not in out and time.monotonic() < deadline:  # the display has drawn an epoch line
        drain(0.1)
    if to_the_group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    while drain(1.0) and proc.poll() is None:
        pass
    while drain(0.2):
        pass
    code = proc.wait(60)
    os.close(master)
    text = ANSI.sub("", bytes(out).decode(errors="replace")).replace("\r", "\n")
    assert code == 130, text
    assert "Traceback" not in text, text
    # epoch-level progress was on screen (either population: they train side by side, one per core)
    assert re.search(r"#(0-#2|3-#5) epoch .* \d+/400", text), text
    assert "interrupted: 0 of 6 trials complete" in text
    assert f"resume with: caviar tune {spec} --storage {db}" in text
    counts = open_storage(f"sqlite:///{db}").counts(open_storage(f"sqlite:///{db}").get_study("stopme").id)
    assert counts[TrialState.RUNNING] == 0 and counts[TrialState.WAITING] == 6  # back in the queue


# ---------------------------------------------------------------------------------------- tables
def test_dry_run_table_fits_80_columns_without_cut_cells(tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path, "wide", wide=True)
    term = Console(width=80, force_terminal=True, record=True, color_system=None, file=io.StringIO())
    monkeypatch.setattr(cli_module, "console", term)
    code, out, err = run_cli(monkeypatch, capsys, "tune", spec, "--dry-run", "-n", "10", "--format", "json")
    assert code == 0, err
    points = json.loads(out)
    code, _, err = run_cli(monkeypatch, capsys, "tune", spec, "--dry-run", "-n", "10")
    assert code == 0, err
    text = term.export_text()
    lines = text.splitlines()
    assert lines and max(len(line) for line in lines) <= 80, text
    assert "…" not in text
    for name in ("learning_rate", "beta1", "beta2", "l2", "dropout", "epsilon"):
        assert name in text  # every parameter's name, whole
    for p in points:
        assert f"#{p['number']}" in text
        assert cli_module._fmt(p["beta2"]) in text and cli_module._fmt(p["learning_rate"]) in text
    assert cli_module._fmt(0.99985) == "0.99985" and cli_module._fmt(0.0007402) == "0.0007402"


def test_show_piped_gives_full_rows_and_each_trials_own_seconds(tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path, "piped", epochs=2, trials=6, wide=True)
    study = run_study(spec)
    code, out, err = run_cli(monkeypatch, capsys, "show", "piped", "--storage", tmp_path / "piped.db")
    assert code == 0, err
    assert "…" not in out
    header = next(line for line in out.splitlines() if "learning_rate" in line)
    for column in ("beta2", "epsilon", "val_accuracy", "test_accuracy", "epochs", "seconds", "state"):
        assert column in header, header
    assert len(header) > 80  # not cut to 80 columns when piped
    from caviar.web.data import own_seconds

    seconds = own_seconds(study.trials)
    by_population: dict = {}
    for t in study.trials:
        by_population.setdefault((t.worker_id, t.started_at), []).append(t)
    for members in by_population.values():  # each trial's share; together, the population's time
        assert sum(seconds[t.id] for t in members) == pytest.approx(members[0].duration)
        assert all(seconds[t.id] < members[0].duration for t in members) or len(members) == 1
    for t in study.trials:
        assert f"{seconds[t.id]:.2f}" in out
