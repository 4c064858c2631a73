"""Where a tuning study's whole process goes: each phase's wall time, measured without a profiler.

    python benchmarks/study_profile.py                  # the 64-trial digits study of tune.py, both spaces
    python benchmarks/study_profile.py --space mixed    # one space
    python benchmarks/study_profile.py --smoke          # the test suite's run (4 trials, 1 epoch)

The study is tune.py part 1's caviar side (``run_study`` on a fresh SQLite file, its data cache warmed
by an untimed first run). It runs in a child process that wraps the phases with ``time.perf_counter``
(data loading, storage, planning, the kernels' load, each process's training, evaluation, the storage's
writes, the model file) and prints when each ends; this script times the child as a whole process, so
the line ``after run_study`` (interpreter exit) is the whole minus the child's own end. A forked helper
inherits the wrappers: its trainings are printed with its pid.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import byte_compile_caviar, describe_blas, machine_state  # noqa: E402
from tune import study_spec  # noqa: E402

#: The child: the study command with each phase timed.
CHILD = r"""
import json, os, sys, time
T0 = time.perf_counter()
import caviar.tune.study as study_mod
print(f"  import caviar.tune.study: done at {time.perf_counter() - T0:.2f} s", flush=True)
import caviar.storage.sql as sql
import caviar.train.trainer as trainer
import caviar.tune.worker as worker
spent, calls = {}, {}

def timed(owner, name, label, show=False):
    inner = getattr(owner, name)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            end = time.perf_counter()
            spent[label] = spent.get(label, 0.0) + end - start
            calls[label] = calls.get(label, 0) + 1
            if show:
                what = f"{len(args[0].member_ids)} members " if name == "fit" else ""
                print(f"  pid {os.getpid()}: {label} {what}{start - T0:.2f}-{end - T0:.2f} s", flush=True)
    setattr(owner, name, wrapper)

timed(study_mod, "load_data", "load, split and standardize the data")
timed(study_mod, "open_storage", "open (create) the storage")
timed(study_mod, "plan_round", "plan the round (sample, pack, enqueue)")
timed(worker, "load_kernels", "load the kernels", show=True)
timed(trainer.Trainer, "fit", "trains", show=True)
timed(trainer.Trainer, "evaluate", "evaluation (validation each epoch, test at the end)")
timed(sql.SqlStorage, "add_curves", "curve writes")
timed(sql.SqlStorage, "finish_trials", "finish trials")
timed(worker, "model_file_bytes", "the best trial's model file")
start = time.perf_counter()
study = study_mod.run_study(json.load(open(sys.argv[1])))
end = time.perf_counter()
print(f"  run_study: {start - T0:.2f}-{end - T0:.2f} s ({len(study.trials)} trials)")
for label in spent:
    if label != "trains":
        print(f"  {label}: {spent[label]:.3f} s in {calls[label]} calls (this process)")
print(f"END {end - T0:.4f}", flush=True)
"""


def profile(space: str, trials: int, epochs: int, folder: Path) -> None:
    """Run the study once untimed (caches), then timed, and print its phases."""
    for run in ("warm-up", "timed"):
        spec = study_spec("digits", "random", trials, epochs, 0, folder / f"{space}-{run}.db", space=space)
        path = folder / f"{space}-{run}.json"
        path.write_text(json.dumps(spec))
        env = {**os.environ, "CAVIAR_CACHE_DIR": str(folder / "cache")}
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, env=env)
        whole = time.perf_counter() - start
        if out.returncode != 0:
            raise RuntimeError(f"the study failed: {out.stderr[-2000:]}")
    lines = out.stdout.splitlines()
    end = float(next(ln for ln in lines if ln.startswith("END ")).split()[1])
    print(f"\n### {space} space: {trials} trials, {epochs} epochs, whole process {whole:.2f} s")
    for ln in lines:
        if not ln.startswith(("END ", "objectives")):
            print(ln)
    print(f"  after run_study (interpreter exit, process start): {whole - end:.2f} s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", choices=("fixed", "mixed", "both"), default="both")
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--smoke", action="store_true", help="4 trials, 1 epoch")
    ap.add_argument("--data-dir", type=Path, help="accepted as by the other scripts; digits needs no folder")
    args = ap.parse_args(argv)
    trials, epochs = (4, 1) if args.smoke else (args.trials, args.epochs)
    print(machine_state())
    print(byte_compile_caviar())
    print(describe_blas())
    with tempfile.TemporaryDirectory(prefix="caviar-profile-") as tmp:
        for space in ("fixed", "mixed") if args.space == "both" else (args.space,):
            profile(space, trials, epochs, Path(tmp))


if __name__ == "__main__":
    main()
