"""The ``caviar`` command: a thin layer over the Python API (every command is a function call)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from caviar.console import console, err_console, fail, say_error
from caviar.console import storage_url as _storage_url
from caviar.errors import CaviarError
from caviar.hparams import BY_NAME, FIELDS, HParam
from caviar.metrics import TEST_HEADLINE
from caviar.panda.commands import ctl, panda  # light: the session, FastAPI and uvicorn load on use
from caviar.web.commands import dashboard, report  # light: fastapi, plotly and matplotlib load on use

#: The training dtypes (the kernels are float32 and float64 only).
DTYPES = ("float32", "float64")

app = typer.Typer(
    name="caviar",
    help="Train neural networks and tune their hyperparameters, many models at once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Train neural networks and tune their hyperparameters, many models at once."""


def _check_seed(seed: int | None) -> None:
    if seed is not None and not 0 <= seed < 2**63:
        fail(f"--seed: {seed} is not allowed; expected an integer in [0, 2**63)")


def _check_output_dir(option: str, path: Path | None) -> None:
    """A file to write must go into a folder that exists (checked before any work is done)."""
    if path is None:
        return
    parent = path.expanduser().absolute().parent
    if not parent.is_dir():
        fail(f"{option}: folder {parent} does not exist (create it first)")
    if path.is_dir():
        fail(f"{option}: {path} is a folder; give a file name")


def _parse_hidden(text: str) -> tuple[int, ...]:
    text = text.strip()
    if text in ("", "none", "0"):
        return ()
    try:
        widths = tuple(int(w) for w in text.replace(" ", "").split(","))
    except ValueError:
        fail(f"--hidden: {text!r} is not a comma-separated list of widths, e.g. 128,64")
    if any(w < 1 for w in widths):
        fail(f"--hidden: widths must be positive, got {text!r}")
    return widths


def _option(p: HParam) -> inspect.Parameter:
    """The ``caviar train`` option of a registered field: its flag and aliases, type, default and help."""
    flag = p.name.replace("_", "-")
    names = [f"--{flag}", *(f"--{a.replace('_', '-')}" for a in p.aliases)]
    default: Any = p.default
    kind: type = {"float": float, "int": int, "bool": bool, "choice": str, "widths": str}[p.kind]
    if p.kind == "bool":
        names = [f"--{flag}/--no-{flag}"]
    elif p.kind == "widths":
        default = ",".join(map(str, p.default))
    allowed = (
        "comma-separated positive widths, e.g. 128,64 (none: no hidden layer)" if p.kind == "widths" else p.allowed
    )
    help_text = f"{p.help[0].upper()}{p.help[1:]}" + ("" if p.kind == "bool" else f": {allowed}")
    option = typer.Option(*names, help=help_text, rich_help_panel="Hyperparameters (caviar.hparams)")
    return inspect.Parameter(
        p.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option]
    )


def train(
    dataset: Annotated[
        str | None, typer.Argument(help="digits, iris, wine, breast_cancer, diabetes (regression), mnist, mnist1d")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="A CSV, parquet, NPY or NPZ file instead of a named dataset")
    ] = None,
    label: Annotated[str, typer.Option(help="Label column of --file")] = "label",
    task: Annotated[
        str | None,
        typer.Option(help="classification or regression (default: the dataset's, or told from the target)"),
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Directory of the MNIST idx .gz files")] = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    dtype: str = "float32",
    save: Annotated[Path | None, typer.Option(help="Write the trained model to this .npz file")] = None,
    **hp: Any,
) -> None:
    """Train one model on a dataset or file; print validation and test accuracy (R² for a regression).

    Every hyperparameter of caviar.hparams is an option, with its aliases (--lr, --eps, ...).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from caviar.metrics import TASKS
    from caviar.prepared import prepare_data
    from caviar.sklearn import Classifier, Regressor

    if dataset is None and file is None:
        fail("name a dataset (digits, iris, wine, breast_cancer, diabetes, mnist, mnist1d) or give --file")
    if task is not None and task not in TASKS:
        fail(f"--task: {task!r} is not one of {', '.join(TASKS)}")
    _check_seed(seed)
    if dtype not in DTYPES:
        fail(f"--dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    _check_output_dir("--save", save)
    hp["hidden"] = _parse_hidden(hp["hidden"])
    clf = Classifier(**hp, random_state=seed, dtype=dtype)
    try:  # the registry's checks, before loading anything heavy
        clf.train_config()
    except CaviarError as exc:
        name, _, what = str(exc).partition(": ")
        fail(f"--{name.replace('_', '-')}: {what}" if name in BY_NAME else str(exc))
    epochs = clf.epochs
    data = prepare_data(
        dataset, file, label, data_dir, val_fraction, test_fraction, seed, standardize=False, dtype=dtype, task=task
    )
    if data.is_regression:  # the Regressor standardizes the target itself, by the same rule
        clf = Regressor(**hp, random_state=seed, dtype=dtype)
        y_train, y_val, y_test = (data.targets(y) for y in (data.y_train, data.y_val, data.y_test))
    else:
        y_train, y_val, y_test = (data.classes[y] for y in (data.y_train, data.y_val, data.y_test))
    score = "R²" if data.is_regression else "accuracy"
    with Progress(
        TextColumn("[bold]epoch {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        progress = bar.add_task("train", total=epochs, info="")

        class _Progress:
            def on_epoch_end(self, trainer, rows):
                row: dict[str, float] = next(iter(rows.values()), {})
                info = f"loss {row.get('train_loss', float('nan')):.4f}"
                if row.get("val_accuracy", float("nan")) == row.get("val_accuracy"):  # a regression's is NaN
                    info += f"  val acc {row['val_accuracy']:.4f}"
                elif "val_loss" in row:
                    info += f"  val loss {row['val_loss']:.4f}"
                bar.update(progress, advance=1, info=info)

        validation = (data.X_val, y_val) if len(y_val) else None
        clf.fit(data.X_train, y_train, validation_data=validation, callbacks=[_Progress()])
    if len(y_val):
        console.print(f"validation {score}: {clf.score(data.X_val, y_val):.4f}")
    head = f"test {score}:".ljust(len(f"validation {score}: "))
    console.print(f"{head}{clf.score(data.X_test, y_test):.4f}   ({data.name}, status {clf.status_})")
    if save is not None:
        from caviar.model_io import save_classifier

        written = save_classifier(clf, save)
        console.print(f"model saved to {written}")


_fixed = [q for q in inspect.signature(train, eval_str=True).parameters.values() if q.kind != q.VAR_KEYWORD]
train.__signature__ = inspect.Signature([*_fixed, *(_option(p) for p in FIELDS)])  # type: ignore[attr-defined]
app.command()(train)


def main() -> None:
    """Entry point that turns caviar errors into one line and a non-zero exit."""
    import warnings

    def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
        say_error(message, "warning", "yellow")

    warnings.showwarning = one_line_warning
    try:
        app()
    except CaviarError as exc:
        say_error(exc)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


# ------------------------------------------------------------------------------------------ tuning
StorageOpt = Annotated[
    str | None, typer.Option("--storage", help="SQLAlchemy URL or SQLite file (default: caviar.db here)")
]


def _fmt(value) -> str:
    """4 significant digits; a value just below 1 (a beta) with 3 significant digits of its gap to 1
    (0.99985, not 0.9998)."""
    if isinstance(value, float):
        if 0.9 < value < 1:
            import math

            return f"{value:.{math.ceil(-math.log10(1 - value)) + 2}f}".rstrip("0")
        return f"{value:.4g}"
    return str(value)


@app.command()
def tune(
    spec: Annotated[Path, typer.Argument(help="The study spec (TOML)")],
    trials: Annotated[int | None, typer.Option("--trials", "-t", help="Number of trials")] = None,
    workers: Annotated[int | None, typer.Option("--workers", "-w", help="Worker processes")] = None,
    storage: StorageOpt = None,
    seed: Annotated[int | None, typer.Option(help="Study seed")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the first points, train nothing")] = False,
    n: Annotated[int, typer.Option("-n", help="How many points --dry-run prints")] = 10,
    fmt: Annotated[str, typer.Option("--format", help="--dry-run output: table, csv or json")] = "table",
    plot: Annotated[
        Path | None, typer.Option("--plot", help="With --dry-run: a PNG of the points on their scales")
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a spec key, e.g. --set data.data_dir=data/mnist (repeatable)"),
    ] = None,
    objective: Annotated[
        str | None,
        typer.Option("--objective", help="Your own training code, module:function (imported from the spec's folder)"),
    ] = None,
) -> None:
    """Run (or resume) a tuning study: trials sharing a shape train together as one population."""
    from caviar.tune.planning import preview, resolve_spec

    if not spec.is_file():
        fail(f"spec file not found: {spec}")
    _check_seed(seed)
    if objective is not None or _is_objective_toml(spec):
        _tune_objective(
            spec, objective, trials, workers, storage, seed, _parse_settings(settings or []), dry_run, n, fmt
        )
        return
    resolved = resolve_spec(spec, trials, workers, storage, seed, _parse_settings(settings or []))
    if dry_run:
        rows = preview(resolved, n)
        _print_rows(rows, fmt)
        if len(rows) < n:
            err_console.print(
                f"{len(rows)} points: {resolved.search.strategy} proposes later points from the "
                "results of these, so only its first round is known before training",
                highlight=False,
            )
        if plot is not None:
            from caviar.web.preview import preview_png

            err_console.print(f"plot written to {preview_png(resolved.space, rows, plot)}")
        return
    _run_with_progress(resolved, _resume_command(spec, trials, workers, storage, seed, settings or []))


def _resume_command(spec: Path, trials, workers, storage, seed, settings: list[str]) -> str:
    """The command that resumes this study: the same spec and options (a study resumes where it stood)."""
    import shlex

    words = ["caviar", "tune", str(spec)]
    for flag, value in (("--trials", trials), ("--workers", workers), ("--storage", storage), ("--seed", seed)):
        if value is not None:
            words += [flag, str(value)]
    for item in settings:
        words += ["--set", item]
    return shlex.join(words)


def _display_storage(url: str) -> str:
    """A SQLite URL as the file path a user would type (relative to here when below it)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    path = Path(url[len(prefix) :])
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _parse_settings(items: list[str]) -> dict:
    """``key=value`` pairs; values parse as TOML (numbers, booleans, lists) or stay strings.

    Relative paths given for data.path / data.data_dir are taken from the working directory.
    """
    import tomllib

    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            fail(f"--set: {item!r} is not KEY=VALUE (e.g. --set search.trials=16)")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        if key.strip() in ("data.path", "data.data_dir") and isinstance(value, str):
            value = str(Path(value).expanduser().resolve())
        out[key.strip()] = value
    return out


def _run_with_progress(spec, resume: str | None = None) -> None:
    """Run the study under the live display (caviar.progress); Ctrl-C says how to resume, then exits 130."""
    import time as _time

    from caviar.progress import TuneDisplay, summary_line
    from caviar.storage import TrialState, open_storage
    from caviar.tune.study import run_study

    total = spec.search.trials
    done = _finished_so_far(spec.storage_url, spec.name)
    start = _time.perf_counter()
    display = TuneDisplay(
        console,
        total=total,
        done=done,
        metric=spec.search.metric,
        epochs=spec.training.epochs,
        storage=lambda: open_storage(spec.storage_url, read_only=True),
        study=spec.name,
    )

    def started() -> None:
        """The data passed its checks and the study is stored: say what runs, then draw the display."""
        if done:
            console.print(f"resuming study {spec.study.name}: {summary_line(done, total)}", highlight=False)
        console.print(
            f"study {spec.study.name}: {total} trials, {spec.search.strategy} search over "
            f"{', '.join(spec.space.names) or 'nothing'}; storage {spec.search.storage}",
            highlight=False,
        )
        display.__enter__()

    try:
        study = run_study(spec, on_progress=display, on_start=started)
    except KeyboardInterrupt:
        display.__exit__(None, None, None)
        now_done = _finished_so_far(spec.storage_url, spec.name)
        err_console.print(
            f"interrupted: {summary_line(now_done, total)}; the trials in training go back to the queue.\n"
            f"resume with: {resume or 'caviar tune SPEC'}",
            highlight=False,
            soft_wrap=True,
        )
        raise
    finally:
        display.__exit__(None, None, None)
    elapsed = _time.perf_counter() - start
    counts = study.counts()
    best = study.best_trial
    console.print(f"done in {elapsed:.1f}s: " + ", ".join(f"{v} {k.lower()}" for k, v in counts.items() if v))
    reasons = failure_reasons(study)
    for reason, n in reasons.items():
        say_error(f"{n} trial(s) failed: {reason}", "failed", "yellow")
    if best is not None:
        m = best.metrics
        test = TEST_HEADLINE[spec.task]
        console.print(
            f"best trial #{best.number}: {spec.search.metric} {_fmt(m.get(spec.search.metric))}, "
            f"{test.replace('_', ' ')} {_fmt(m.get(test))}",
            highlight=False,
        )
        for k, v in best.params.items():
            console.print(f"  {k} = {_fmt(v)}", highlight=False)
    url = _display_storage(spec.search.storage)
    console.print(f"stored in {url}", highlight=False)
    console.print(
        f"next: caviar show {spec.study.name} --storage {url}\n"
        f"      caviar dashboard --storage {url}\n"
        f"      caviar best {spec.study.name} --storage {url} --save best.npz",
        highlight=False,
        markup=False,
    )
    if not counts.get(TrialState.COMPLETE):
        first = next(iter(reasons), "no trial completed (every one diverged or was pruned)")
        fail(f"study '{spec.study.name}': no trial completed; {first}", code=1)


def _finished_so_far(url: str, name: str) -> int:
    """Finished trials of study ``name`` (0 for a new one), read without creating or writing anything:
    the storage is created only once the study's data passed its checks (in run_study)."""
    from caviar.errors import StorageError
    from caviar.storage import open_storage

    try:
        store = open_storage(url, read_only=True)
    except StorageError:  # no storage yet, or not a caviar database yet
        return 0
    try:
        return sum(v for k, v in store.counts(store.get_study(name).id).items() if k.finished)
    except StorageError:  # a new study
        return 0
    finally:
        store.close()


def failure_reasons(study) -> dict[str, int]:
    """How many failed trials gave each reason, the first failure's reason first."""
    from caviar.storage import TrialState

    reasons: dict[str, int] = {}
    for t in study.storage.trials(study.id, [TrialState.FAILED]):
        reason = (t.error or "unknown error").strip().splitlines()[0] if (t.error or "").strip() else "unknown error"
        reasons[reason] = reasons.get(reason, 0) + 1
    return reasons


def _print_rows(rows: list[dict], fmt: str) -> None:
    import csv
    import json

    if fmt == "csv":
        if rows:
            keys = list(dict.fromkeys(k for r in rows for k in r))
            writer = csv.DictWriter(sys.stdout, fieldnames=keys, lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items()} for r in rows)
    elif fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
    elif fmt == "table":
        keys = list(dict.fromkeys(k for r in rows for k in r))
        cells = [[_fmt(r.get(k, "")) for k in keys] for r in rows]
        width = console.width if console.is_terminal else None
        for table in _fitted_tables(keys, cells, width):
            _print_table(table)
    else:
        fail(f"--format: {fmt!r} is not one of table, csv, json")


def _table_width(columns: list[list[str]]) -> int:
    """The width rich's default table takes: each column its widest cell, a space each side, borders."""
    return 1 + sum(max(map(len, col), default=0) + 3 for col in columns)


def _fitted_tables(keys: list[str], cells: list[list[str]], width: int | None) -> list:
    """One table of points (a row each) if it fits ``width`` (None: any width); else one row per
    parameter and a column per point, in as many tables as it takes: no cell is ever cut."""
    from rich.table import Table

    columns = [[k, *(row[j] for row in cells)] for j, k in enumerate(keys)]
    if width is None or _table_width(columns) <= width:
        table = Table()
        for k in keys:
            table.add_column(k, no_wrap=True)
        for row in cells:
            table.add_row(*row)
        return [table]
    names = [k for k in keys if k != "number"]
    label = [_fmt(row[keys.index("number")]) if "number" in keys else str(i) for i, row in enumerate(cells)]
    body = {k: [row[keys.index(k)] for row in cells] for k in names}
    tables, start = [], 0
    first = ["point", *names]
    while start < len(cells):
        stop = start + 1  # at least one point a table
        while stop < len(cells):
            cols = [first, *([f"#{label[i]}", *(body[k][i] for k in names)] for i in range(start, stop + 1))]
            if _table_width(cols) > width:
                break
            stop += 1
        table = Table()
        table.add_column("point", no_wrap=True)
        for i in range(start, stop):
            table.add_column(f"#{label[i]}", no_wrap=True, justify="right")
        for k in names:
            table.add_row(k, *(body[k][i] for i in range(start, stop)))
        tables.append(table)
        start = stop
    return tables


def _print_table(table) -> None:
    """On a terminal, as wide as it is; piped or redirected, as wide as the table (no 80-column cut)."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.console import Console

    natural = Console(width=100_000).measure(table).maximum
    Console(width=max(80, natural), color_system=None).print(table)


def _open_study(study: str, storage: str | None):
    """A stored study, its storage opened read-only (show, export, best never write to it)."""
    from caviar.storage import open_storage
    from caviar.tune.study import Study

    return Study(open_storage(_storage_url(storage), read_only=True), study)


@app.command()
def studies(storage: StorageOpt = None) -> None:
    """List the studies in a storage, with their trial counts and best objective."""
    from rich.table import Table

    from caviar.storage import TrialState, open_storage

    records = open_storage(_storage_url(storage), read_only=True).list_studies()
    table = Table("study", "status", "trials", "complete", "diverged", "pruned", "failed", "best")
    for r in records:
        c = r.counts
        table.add_row(
            r.name,
            r.status,
            str(r.n_trials),
            str(c.get(TrialState.COMPLETE, 0)),
            str(c.get(TrialState.DIVERGED, 0)),
            str(c.get(TrialState.PRUNED, 0)),
            str(c.get(TrialState.FAILED, 0)),
            _fmt(r.best_objective),
        )
    console.print(table)


@app.command()
def show(
    study: Annotated[str, typer.Argument(help="Study name or id")],
    storage: StorageOpt = None,
    top: Annotated[int, typer.Option("--top", "-k", help="How many of the best trials")] = 10,
) -> None:
    """The top trials of a study with every parameter, and its coarse-to-fine rounds."""
    from rich.table import Table

    s = _open_study(study, storage)
    spec = s.spec
    metric = spec.search.metric
    done = [t for t in s.trials if t.objective is not None]
    done.sort(key=lambda t: -t.objective)
    names = spec.space.names
    from caviar.web.data import own_seconds

    seconds = own_seconds(s.trials)
    table = Table(title=f"study {s.name}: top {min(top, len(done))} of {len(s.trials)} trials by {metric}")
    test = TEST_HEADLINE[getattr(spec, "task", "classification")]  # test_r2 for a regression
    for col in ("#", "round", *names, metric, test, "epochs", "seconds", "state"):
        table.add_column(col)
    for t in done[:top]:
        own = seconds.get(t.id)
        table.add_row(
            str(t.number),
            str(t.round),
            *[_fmt(t.params.get(k)) for k in names],
            _fmt(t.metrics.get(metric)),
            _fmt(t.metrics.get(test)),
            _fmt(t.metrics.get("epochs_run")),
            "" if own is None else f"{own:.2f}",
            t.state,
        )
    _print_table(table)
    counts = s.counts()
    console.print(", ".join(f"{v} {k.lower()}" for k, v in counts.items() if v) or "no trials")
    for rnd, box in s.boxes.items():
        ranges = ", ".join(f"{k} [{_fmt(box['low'][k])}, {_fmt(box['high'][k])}]" for k in box.get("low", {}))
        console.print(f"round {rnd} box: {ranges}", highlight=False)


@app.command()
def export(
    study: Annotated[str, typer.Argument(help="Study name or id")],
    storage: StorageOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="csv, json, or optuna (with --to)")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File (default: stdout)")] = None,
    to: Annotated[str | None, typer.Option("--to", help="--format optuna: the Optuna storage URL to write")] = None,
) -> None:
    """Every trial with its parameters, state and metrics, as CSV or JSON (or into an Optuna storage)."""
    if fmt == "optuna" or to is not None:
        _export_optuna(study, storage, fmt, to)
        return
    s = _open_study(study, storage)
    df = s.to_dataframe()
    if fmt not in ("csv", "json"):
        fail(f"--format: {fmt!r} is not one of csv, json")
    text = df.to_csv(index=False) if fmt == "csv" else df.to_json(orient="records", indent=2, date_format="iso")
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        output.write_text(text)
        console.print(f"{len(df)} trials written to {output}")


@app.command("export-model")
def export_model(
    model: Annotated[Path, typer.Argument(help="A caviar model file (.npz)")],
    fmt: Annotated[str, typer.Option("--format", help="onnx")] = "onnx",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default: the model's name, .onnx)")
    ] = None,
) -> None:
    """A saved model in another format: ONNX (the network in inference mode, input standardization included)."""
    from caviar.export.onnx import save_onnx
    from caviar.sklearn import load

    if fmt != "onnx":
        fail(f"--format: {fmt!r} is not one of onnx")
    path = save_onnx(load(model), output or model.with_suffix(".onnx"))
    console.print(f"{model} written as ONNX to {path}")


@app.command()
def best(
    study: Annotated[str, typer.Argument(help="Study name or id")],
    storage: StorageOpt = None,
    save: Annotated[Path | None, typer.Option(help="Write the best trial's model (.npz)")] = None,
    ensemble: Annotated[
        int | None, typer.Option(help="Average the top k trials in probability; --save writes the ensemble")
    ] = None,
    packed: Annotated[
        bool,
        typer.Option(help="With --ensemble k: train k members with the best hyperparameters on train + validation"),
    ] = False,
) -> None:
    """The best trial: its hyperparameters and metrics; --save writes its model file."""
    _check_output_dir("--save", save)
    s = _open_study(study, storage)
    t = s.best_trial
    if t is None:
        fail(f"study '{s.name}' has no completed trial yet")
    console.print(f"best trial #{t.number} (round {t.round})", highlight=False)
    for k, v in {**t.params, **t.metrics}.items():
        console.print(f"  {k} = {_fmt(v)}", highlight=False)
    if packed and ensemble is None:
        fail("--packed needs --ensemble k (how many members to train)")
    if ensemble is not None and getattr(s.spec, "task", "classification") != "classification":
        fail(f"--ensemble: members are averaged in probability, for classification; study '{s.name}' is a regression")
    if ensemble is not None:
        _best_ensemble(s, ensemble, packed, save)
    elif save is not None:
        from caviar.model_io import save_classifier

        written = save_classifier(s.best_model(), save)
        console.print(f"model saved to {written} (load it with caviar.load)")


def _best_ensemble(s: Any, k: int, packed: bool, save: Path | None) -> None:
    """``best --ensemble k``: the ensemble's accuracies beside the best trial's, and its file."""
    from caviar.ensemble import save_ensemble
    from caviar.tune.ensemble import ensemble_report

    try:
        ens = s.ensemble(k, packed=packed)
    except CaviarError as exc:
        fail(str(exc))
    report = ensemble_report(s, ens, packed=packed)
    what = f"packed ensemble of {k} (best hyperparameters, train + validation)" if packed else f"ensemble of top {k}"
    for name, label in (("best_trial", "best trial"), ("ensemble", what)):
        scores = ", ".join(f"{m} = {_fmt(v) if v is not None else '-'}" for m, v in report[name].items())
        console.print(f"{label}: {scores}", highlight=False)
    if save is not None:
        written = save_ensemble(ens, save)
        console.print(f"ensemble saved to {written} (load it with caviar.load)")


# ---------------------------------------------------------------------------- panda and the web page
# Their commands live beside their code (caviar.panda.commands, caviar.web.commands, imported above).
app.command()(panda)
app.command()(ctl)
app.command()(dashboard)
app.command()(report)


# ------------------------------------------------------------------------- external objectives, Optuna
# Tuning the user's own training code (caviar.tune.objective) and moving studies to and from Optuna
# (caviar.interop.optuna_io); docs/objective.md.
def _is_objective_toml(path: Path) -> bool:
    """Whether a spec file is an external objective's: an [objective] table and no [data]."""
    import tomllib

    from caviar.tune.objective_spec import is_objective_spec

    try:
        return is_objective_spec(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False  # the spec loader reports it, with the file name


def _tune_objective(spec_path, target, trials, workers, storage, seed, settings, dry_run, n, fmt) -> None:
    import time as _time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from caviar.tune.asktell import ObjectiveStudy
    from caviar.tune.objective import run_objective
    from caviar.tune.objective_spec import resolve_objective_spec

    spec = resolve_objective_spec(
        spec_path, trials=trials, workers=workers, storage=storage, seed=seed, target=target, settings=settings
    )
    if dry_run:
        sampler = spec.sampler()
        numbers = sampler.round_numbers(spec.search.trials)[0][:n] if sampler.adaptive else list(range(n))
        _print_rows(
            [
                {"number": k, "round": 0, **spec.space.decode(u)}
                for k, u in zip(numbers, sampler.propose(numbers), strict=True)
            ],
            fmt,
        )
        return
    target = target or spec.objective.target
    if target is None:
        fail(f"{spec_path}: name the objective: --objective module:function, or [objective] target = ...")
    metric, total = spec.search.metric, spec.search.trials
    console.print(
        f"study {spec.study.name}: {total} trials of {target}, {spec.search.strategy} search over "
        f"{', '.join(spec.space.names)}; storage {spec.search.storage}",
        highlight=False,
    )
    start = _time.perf_counter()
    with Progress(
        TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[best]}"),
        TimeRemainingColumn(), console=console,
    ) as bar:  # fmt: skip
        task = bar.add_task("tune", total=total, best="")

        def progress(counts, best) -> None:
            done = sum(v for k, v in counts.items() if k.finished)
            info = f"best {metric} {_fmt(best.metrics.get(metric))}" if best else ""
            bar.update(task, completed=min(done, total), best=info)

        store, study_id = run_objective(spec, target, on_progress=progress)
    study = ObjectiveStudy(store, study_id)
    counts = study.counts()
    console.print(
        f"done in {_time.perf_counter() - start:.1f}s: " + ", ".join(f"{v} {k.lower()}" for k, v in counts.items() if v)
    )
    best = study.best_trial
    if best is not None:
        console.print(f"best trial #{best.number}: {metric} {_fmt(best.metrics.get(metric))}", highlight=False)
        for k, v in best.params.items():
            console.print(f"  {k} = {_fmt(v)}", highlight=False)
    for t in study.trials:
        if t.error:
            console.print(f"  trial #{t.number} {t.state}: {t.error}", highlight=False, soft_wrap=True)
    url = _display_storage(str(spec.search.storage))
    console.print(f"stored in {url}\nnext: caviar show {spec.study.name} --storage {url}", highlight=False)


@app.command("import-optuna")
def import_optuna(
    url: Annotated[str, typer.Argument(help="The Optuna storage URL, e.g. sqlite:///optuna.db")],
    study: Annotated[str, typer.Argument(help="The Optuna study's name")],
    storage: StorageOpt = None,
    name: Annotated[
        str | None, typer.Option("--name", help="The caviar study's name (default: the Optuna one)")
    ] = None,
) -> None:
    """Copy an Optuna study (trials, params, values, intermediate values, states) into caviar's storage."""
    from caviar.interop.optuna_io import import_optuna_study

    target = storage or "caviar.db"
    result = import_optuna_study(url, study, target, name=name)
    console.print(
        f"imported {result.n_trials} trials of Optuna study '{study}' as caviar study '{result.name}' "
        f"({', '.join(f'{k}: {v}' for k, v in result.scales.items())}); stored in {_display_storage(result.storage)}",
        highlight=False,
        soft_wrap=True,
    )


def _export_optuna(study: str, storage: str | None, fmt: str, to: str | None) -> None:
    from caviar.interop.optuna_io import export_optuna_study

    if fmt != "optuna":
        fail(f"--to is for --format optuna, not {fmt!r}")
    if not to:
        fail("--format optuna needs --to URL (an Optuna storage, e.g. sqlite:///optuna.db)")
    result = export_optuna_study(_storage_url(storage), study, to)
    console.print(
        f"exported {result.n_trials} trials of caviar study '{study}' to Optuna study '{result.name}' at {to}",
        highlight=False,
        soft_wrap=True,
    )
