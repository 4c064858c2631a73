"""caviar.Classifier against scikit-learn's MLPClassifier, side by side in one process.

Both train the same network (hidden 128-64, ReLU, softmax output), with Adam (lr 1e-3, betas 0.9 /
0.999), mini-batches of 64, no L2, for the same number of full epochs (scikit-learn's early
stopping and tolerance switched off), float32 for caviar and float64 for scikit-learn (its only
choice for MLPs). caviar runs with and without batch norm. Then the caviar approach: a sweep of
16 learning rates, 16 sequential MLPClassifier fits against one caviar population of 16.

    python benchmarks/sklearn_mlp.py                       # digits and mnist1d
    python benchmarks/sklearn_mlp.py --data-dir DIR        # and MNIST (60k) from idx files
    python benchmarks/sklearn_mlp.py --quick               # fewer epochs and repeats
    python benchmarks/sklearn_mlp.py --smoke               # the test suite's run (1 epoch, 1 repeat)

Prints the machine's state and BLAS, fit seconds (median and min-max of ``--repeats`` interleaved runs,
default 3), test accuracy, and ratios sklearn / caviar.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe_blas, interleaved_runs, machine_state, set_threads, spread, timed  # noqa: E402

HIDDEN = (128, 64)
BATCH = 64
SWEEP = np.logspace(-4, -1.5, 16)


def load(name: str, data_dir: str | None):
    """Standardized train/test arrays of a data set (caviar's loaders and split)."""
    from caviar.prepared import prepare_data

    d = prepare_data(name, data_dir=data_dir, validation_fraction=0.0, test_fraction=0.25, seed=0)
    return d.X_train, d.y_train, d.X_test, d.y_test


def sklearn_mlp(epochs: int, lr: float = 1e-3, seed: int = 0):
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(
        hidden_layer_sizes=HIDDEN,
        activation="relu",
        solver="adam",
        alpha=0.0,
        batch_size=BATCH,
        learning_rate_init=lr,
        max_iter=epochs,
        shuffle=True,
        random_state=seed,
        tol=0.0,
        n_iter_no_change=epochs + 1,
        early_stopping=False,
    )


def caviar_clf(epochs: int, batchnorm: bool, lr: float = 1e-3, seed: int = 0):
    from caviar import Classifier

    return Classifier(
        hidden=HIDDEN,
        batchnorm=batchnorm,
        optimizer="adam",
        learning_rate=lr,
        batch_size=BATCH,
        epochs=epochs,
        standardize=False,
        random_state=seed,
        dtype="float32",  # as measured in docs/benchmarks.md (the estimator's default is float64)
    )


def single_fits(name: str, data, epochs: int, repeats: int) -> None:
    """One model each: fit time and test accuracy."""
    Xtr, ytr, Xte, yte = data
    models = {
        "sklearn MLPClassifier": lambda: sklearn_mlp(epochs),
        "caviar Classifier (no BN)": lambda: caviar_clf(epochs, False),
        "caviar Classifier (BN)": lambda: caviar_clf(epochs, True),
    }
    fitted = {}

    def fit(key):
        def run():
            fitted[key] = models[key]().fit(Xtr, ytr)

        return timed(run)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLPClassifier's ConvergenceWarning at max_iter
        runs = interleaved_runs({k: fit(k) for k in models}, repeats)
    seconds = {k: float(np.median(v)) for k, v in runs.items()}
    base = seconds["sklearn MLPClassifier"]
    print(f"\n### {name}: one model, {epochs} epochs, {len(ytr)} training samples, {repeats} repeats")
    print("| model | fit s, median (min-max) | test acc | speed-up vs sklearn |\n|---|---:|---:|---:|")
    for k in models:
        print(f"| {k} | {spread(runs[k])} | {fitted[k].score(Xte, yte):.4f} | {base / seconds[k]:.1f}x |")


def sweep(name: str, data, epochs: int, rates: np.ndarray = SWEEP) -> None:
    """A learning-rate sweep (16 rates): sequential MLPClassifier fits vs one caviar population."""
    from caviar.config import TrainConfig
    from caviar.nn.losses import accuracy
    from caviar.nn.network import Architecture, forward
    from caviar.train.trainer import Trainer, hyperparameters_from

    Xtr, ytr, Xte, yte = data
    Xtr32, Xte32 = Xtr.astype(np.float32), Xte.astype(np.float32)
    results = {}

    def run_sklearn():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results["sklearn"] = [sklearn_mlp(epochs, lr).fit(Xtr, ytr).score(Xte, yte) for lr in rates]

    def run_caviar():
        cfg = TrainConfig(optimizer="adam", batch_size=BATCH, epochs=epochs)
        hp = hyperparameters_from([{"learning_rate": lr} for lr in rates], cfg)
        arch = Architecture(Xtr.shape[1], int(ytr.max()) + 1, HIDDEN, "relu", True)
        t = Trainer(arch, cfg, hp, list(range(len(rates))), seed=0)
        t.fit(Xtr32, ytr)
        params, state = t.stacked_kept()
        logits, _, _ = forward(arch, params, state, Xte32, train=False)
        results["caviar"] = list(accuracy(logits, yte))

    sk = timed(run_sklearn)()
    cv = timed(run_caviar)()
    print(f"\n### {name}: learning-rate sweep of {len(rates)} models, {epochs} epochs")
    print("| | wall s | best test acc |\n|---|---:|---:|")
    print(f"| {len(rates)} x sklearn MLPClassifier | {sk:.1f} | {max(results['sklearn']):.4f} |")
    print(f"| caviar population K = {len(rates)} (BN) | {cv:.1f} | {max(results['caviar']):.4f} |")
    print(f"speed-up: {sk / cv:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder of the MNIST idx .gz files (adds MNIST)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="5 epochs, 1 repeat")
    parser.add_argument("--smoke", action="store_true", help="1 epoch, 1 repeat: the test suite's run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the single fits")
    args = parser.parse_args()
    limiter = set_threads(args.threads)  # noqa: F841 (kept alive for the limit to hold)
    print(f"caviar vs scikit-learn MLPClassifier, {args.threads} threads")
    print(machine_state())
    print(describe_blas())
    epochs, repeats = (1, 1) if args.smoke else (5, 1) if args.quick else (20, args.repeats)
    cases = [("digits", None, epochs), ("mnist1d", None, epochs)]
    if args.data_dir:
        cases.append(("mnist", args.data_dir, max(2, epochs // 4)))
    for name, data_dir, ep in cases:
        data = load(name, data_dir)
        single_fits(name, data, ep, 1 if name == "mnist" else repeats)
        if name != "mnist":
            sweep(name, data, ep, SWEEP[::8] if args.smoke else SWEEP)


if __name__ == "__main__":
    main()
