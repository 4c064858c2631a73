"""``caviar.Classifier`` and ``caviar.Regressor``: the engine as scikit-learn estimators (a population of one).

They follow scikit-learn's conventions (MLPClassifier's and MLPRegressor's): hyperparameters are
constructor arguments stored as given, ``fit`` returns self, learned attributes end in ``_``,
``random_state`` as check_random_state reads it, ``sample_weight`` in ``fit`` and ``partial_fit``,
``warm_start``, ``verbose``; bad input raises ValueError (caviar's errors subclass it) in one line.
They drop into Pipeline, cross_val_score and GridSearchCV, and pass check_estimator with their
default parameters. The weights' checks live in caviar.sklearn_weights, the file format in
caviar.model_io.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, replace
from numbers import Integral, Real
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Hidden, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from caviar.backend import Backend
from caviar.config import ModelConfig, TrainConfig
from caviar.data.preprocess import fit_target_scaler, scale_target, unscale_target
from caviar.errors import DataError, ModelFileError
from caviar.hparams import FIELDS, MODEL, TRAIN, HParam, canonical
from caviar.model_io import REGRESSOR, check_header, model_weights, read_model_file, save_model, target_scaling
from caviar.nn.losses import log_softmax
from caviar.nn.network import Architecture, forward
from caviar.sklearn_weights import check_sample_weight, combined_weights, weighted_standardizer
from caviar.train.trainer import Trainer, hyperparameters_from


def sklearn_constraint(p: HParam) -> list[Any]:
    """A registered field's bounds or choices as a scikit-learn parameter constraint.

    Integers are scikit-learn's Integral (a boolean passes that test, so fit refuses it through the
    registry's own check of the configs right after).
    """
    if p.kind == "bool":
        return ["boolean"]
    if p.kind == "choice":
        return [StrOptions(set(p.choices))]
    if p.kind == "widths":
        return [tuple, list]
    b = p.bounds
    left = b.low is not None and not b.low_open
    right = b.high is not None and not b.high_open
    closed = {(True, True): "both", (True, False): "left", (False, True): "right", (False, False): "neither"}
    return [Interval(Integral if p.kind == "int" else Real, b.low, b.high, closed=closed[left, right])]


#: The estimators' parameters that are not hyperparameters of the registry, and their constraints.
ESTIMATOR_PARAMETERS: dict[str, list[Any]] = {
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "standardize": ["boolean"],
    "shuffle": ["boolean"],
    "random_state": [None, Interval(Integral, 0, None, closed="left"), np.random.RandomState, np.random.Generator],
    "seed": [Interval(Integral, 0, None, closed="left"), Hidden(StrOptions({"deprecated"}))],
    "dtype": [StrOptions({"float32", "float64"}), type, np.dtype],
    "verbose": ["verbose"],
    "warm_start": ["boolean"],
}

#: The Classifier's: the estimators' and ``class_weight``.
CLASSIFIER_PARAMETERS: dict[str, list[Any]] = {
    **ESTIMATOR_PARAMETERS,
    "class_weight": [None, StrOptions({"balanced"}), dict],
}


def seed_of(random_state: Any) -> int:
    """The trainer's integer seed for a ``random_state``, scikit-learn's way (check_random_state): an
    int is the seed itself (the same fit every time), None draws one from numpy's global RandomState,
    a RandomState or a Generator draws one from itself (so successive fits differ)."""
    if isinstance(random_state, Integral) and not isinstance(random_state, bool):
        return int(random_state)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63 - 1))
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


class _EpochLines:
    """``verbose``: one line per epoch on stdout, as scikit-learn's MLP prints them: the epoch (counted
    over warm starts and partial_fit passes), the training loss and, with a validation split, its score
    (``score(trainer, row)``: accuracy for the Classifier, R² for the Regressor)."""

    def __init__(self, offset: int, score: Callable[[Trainer, dict], float | None]) -> None:
        self.offset = offset
        self.score = score

    def on_epoch_end(self, trainer: Trainer, rows: dict[int, dict[str, float]]) -> None:
        for row in rows.values():
            line = f"Epoch {self.offset + int(row['epoch']) + 1}, loss = {row['train_loss']:.8f}"
            value = self.score(trainer, row)
            if value is not None:
                line += f", validation score = {value:.6f}"
            print(line, flush=True)


class _Network(BaseEstimator):
    """What the Classifier and the Regressor share: their parameters' checks, the trainer they build, the
    fitting loop (warm starts, partial_fit passes, weights, verbose lines) and the learned attributes.

    Subclasses define ``_n_outputs``, ``_loss_name``, ``_targets`` (y as the trainer's targets, fitting
    the target's scaling where there is one), ``_val_score`` and ``_fit_weights``."""

    _parameter_constraints: dict[str, list[Any]] = {
        **{p.name: sklearn_constraint(p) for p in FIELDS},
        **ESTIMATOR_PARAMETERS,
    }

    # learned in fit / partial_fit / load (class-level annotations only: no attribute before then)
    params_: dict[str, np.ndarray]
    state_: dict[str, np.ndarray]
    history_: list[dict[str, float]]
    n_iter_: int
    loss_curve_: list[float]
    n_features_in_: int

    # ----- configuration ---------------------------------------------------------------------
    def model_config(self) -> ModelConfig:
        """The network part of the parameters, each checked by the registry as given."""
        from caviar.validation import check_model_config, check_value

        v = {p.name: check_value(p.name, getattr(self, p.name)) for p in MODEL}
        return check_model_config(
            ModelConfig(
                hidden=tuple(v["hidden"]),
                activation=v["activation"],
                batchnorm=bool(v["batchnorm"]),
                dropout=float(v["dropout"]),
            )
        )

    def train_config(self) -> TrainConfig:
        """The training part of the parameters, checked by the registry, with the rules across both parts."""
        from caviar.validation import check_configs, check_value

        train = TrainConfig(**{p.name: check_value(p.name, getattr(self, p.name)) for p in TRAIN})
        return check_configs(self.model_config(), train)[1]

    def set_params(self, **params: Any) -> Any:
        """scikit-learn's set_params, with the registry's aliases (``lr``, ``eps``...) for their names.

        The constructor takes the registered names only (scikit-learn reads the parameters from its
        signature); set_params, and so GridSearchCV's grids, take the aliases too.
        """
        return super().set_params(**{canonical(name): value for name, value in params.items()})

    def _validate_params(self) -> None:
        """Called by fit: the registry's checks first (caviar's one-line messages), then scikit-learn's."""
        self.train_config()
        super()._validate_params()

    def _fit_seed(self) -> int:
        """The seed of this fit, from ``random_state`` (``seed_of``); the deprecated ``seed`` still works,
        with a FutureWarning."""
        random_state = self.random_state
        seed = self.seed
        if not (isinstance(seed, str) and seed == "deprecated"):
            name = type(self).__name__
            warnings.warn(
                f"{name}(seed=...) is deprecated and will be removed: use random_state=", FutureWarning, stacklevel=3
            )
            if random_state is not None and random_state != seed:
                raise ValueError(
                    f"{name}: seed={seed} and random_state={random_state!r} disagree; give random_state only"
                )
            random_state = seed
        return seed_of(random_state)

    # ----- data ------------------------------------------------------------------------------
    def _check_X(self, X, reset: bool) -> np.ndarray:
        return validate_data(self, X, reset=reset, dtype=np.dtype(self.dtype), ensure_all_finite=True)

    def _standardized(self, X: np.ndarray) -> np.ndarray:
        s = getattr(self, "standardizer_", None)
        return X if s is None else s.transform(X)

    def _check_batch(self, n: int) -> None:
        if n < 2 and self.batchnorm:
            raise DataError(f"cannot train on {n} sample: batch norm needs at least 2 samples per batch")

    def _new_trainer(self, n_features: int, seed: int, one_pass: bool = False) -> Trainer:
        """A population of one for these parameters; ``one_pass`` (partial_fit): early stopping off,
        so that a pass never retires the model."""
        model, train = self.model_config(), self.train_config()
        if one_pass:
            train = replace(train, early_stopping=False)
        arch = Architecture(n_features, self._n_outputs(), model.hidden, model.activation, model.batchnorm)
        hp = hyperparameters_from([{}], train, dropout=model.dropout)
        return Trainer(
            arch,
            train,
            hp,
            member_ids=[0],
            seed=seed,
            dtype=np.dtype(self.dtype),
            shuffle=bool(self.shuffle),
            loss=self._loss_name(),
        )

    def _load_fitted(self, trainer: Trainer) -> None:
        """The trainer starts from this estimator's fitted weights (a fresh optimizer)."""
        trainer.load_weights(
            {n: a[None] for n, a in self.params_.items()}, {n: a[None] for n, a in self.state_.items()}
        )

    # ----- the fitting loop ------------------------------------------------------------------
    def _fit(self, X, y, sample_weight, validation_data, callbacks) -> Any:
        """fit: from scratch, or (``warm_start`` on a fitted estimator) on from its weights, its loss
        curve and epoch count continued, as MLPClassifier's warm start."""
        warm = bool(self.warm_start) and hasattr(self, "params_")
        X, t = self._prepare(X, y, reset=not warm)
        seed = self._fit_seed()
        w = check_sample_weight(sample_weight, len(t))
        t = self._encode_fit(t, warm)
        w = self._fit_weights(t, w)
        X_val = t_val = w_val = None
        if validation_data is not None:
            X_val = self._check_X(validation_data[0], reset=False)
            t_val = self._encode_val(validation_data[1])
            if len(validation_data) > 2:
                w_val = check_sample_weight(validation_data[2], len(t_val))
        elif self.early_stopping:
            X, X_val, t, t_val, w, w_val = self._split_validation(X, t, w, seed)
        if not warm:
            self.standardizer_ = weighted_standardizer(X, w) if self.standardize else None
            self._fit_target_scaling(t, w)
        self._check_batch(len(t))
        trainer = self._new_trainer(X.shape[1], seed)
        if warm:
            self._load_fitted(trainer)
        previous = list(self.history_) if warm else []
        if self.verbose:
            callbacks = [*callbacks, _EpochLines(len(previous), self._val_score(X_val, t_val))]
        Xv = None if X_val is None else self._standardized(X_val)
        tv = None if t_val is None else self._scaled(t_val)
        trainer.fit(
            self._standardized(X),
            self._scaled(t),
            Xv,
            tv,
            callbacks=callbacks,
            sample_weight=w,
            sample_weight_val=w_val,
        )
        self._adopt(trainer, previous)
        return self

    def _partial_fit(self, X, y, sample_weight, classes=None) -> Any:
        """partial_fit: one pass over (X, y), the optimizer's state kept from pass to pass; the loss curve
        and epoch count go on (after a fit too)."""
        first = not hasattr(self, "params_")
        X, t = self._prepare(X, y, reset=first)
        w = check_sample_weight(sample_weight, len(t))
        t = self._encode_partial(t, first, classes)
        w = self._fit_weights(t, w)
        if first:
            self._partial_seed = self._fit_seed()
            self.standardizer_ = weighted_standardizer(X, w) if self.standardize else None
            self._fit_target_scaling(t, w)
            self.history_ = []
        self._check_batch(len(t))
        trainer = getattr(self, "_trainer", None)
        if trainer is None or trainer.K == 0:  # the first pass, or after fit / load: a fresh optimizer
            seed = getattr(self, "_partial_seed", None)
            trainer = self._new_trainer(X.shape[1], self._fit_seed() if seed is None else seed, one_pass=True)
            if not first:
                self._load_fitted(trainer)
        trainer.train_epoch(self._standardized(X), self._scaled(t), sample_weight=w)
        rows = trainer.end_epoch()
        if self.verbose:
            _EpochLines(len(self.history_) - trainer.epoch + 1, lambda tr, row: None).on_epoch_end(trainer, rows)
        self._trainer = trainer
        self.params_, self.state_ = trainer.member_weights(0)
        row = self._history_row(trainer.histories[0].rows[-1], len(self.history_))
        self.history_ = [*self.history_, row]
        self.n_iter_ = len(self.history_)
        self.loss_curve_ = [r["train_loss"] for r in self.history_]
        return self

    def _split_validation(self, X, t, w, seed: int):
        """The held-out part for early stopping (``validation_fraction``), its weights with it."""
        n_val = max(int(round(self.validation_fraction * len(t))), self._min_validation())
        if len(t) - n_val < 2:
            raise DataError(f"too few samples ({len(t)}) to hold out a validation split")
        stratify = self._stratify(t)
        parts = [X, t] if w is None else [X, t, w]
        out = train_test_split(*parts, test_size=n_val, random_state=seed, stratify=stratify)
        if w is None:
            return out[0], out[1], out[2], out[3], None, None
        return out[0], out[1], out[2], out[3], out[4], out[5]

    def _adopt(self, trainer: Trainer, previous: list[dict[str, float]]) -> None:
        """The trained member's kept weights and curve become the learned attributes (``previous``: the
        curve a warm start goes on from)."""
        params, state = trainer.stacked_kept()
        self.params_ = {n: a[0] for n, a in params.items()}
        self.state_ = {n: a[0] for n, a in state.items()}
        hist = trainer.histories[0]
        offset = len(previous)
        self.history_ = [*previous, *(self._history_row(r, offset + int(r["epoch"])) for r in hist.rows)]
        self.status_ = hist.status
        self.best_epoch_ = offset + hist.best_epoch
        self.n_iter_ = len(self.history_)
        self.loss_curve_ = [r["train_loss"] for r in self.history_]
        self._trainer = trainer

    # ----- defaults for the subclasses' hooks ------------------------------------------------
    def _history_row(self, row: dict[str, float], epoch: int) -> dict[str, float]:
        """A trainer's epoch row as ``history_`` keeps it, numbered over warm starts and passes."""
        return dict(row, epoch=epoch)

    def _fit_target_scaling(self, t: np.ndarray, w: np.ndarray | None) -> None:
        """A regressor's target scaling; nothing for a classifier."""

    def _scaled(self, t: np.ndarray) -> np.ndarray:
        return t

    # ----- the rest of the API ---------------------------------------------------------------
    @property
    def architecture_(self) -> Architecture:
        check_is_fitted(self, "params_")
        m = self.model_config()
        return Architecture(self.n_features_in_, self._n_outputs(), m.hidden, m.activation, m.batchnorm)

    def save(self, path) -> None:
        """Write the fitted model to one .npz file (see docs/model-format.md); ``caviar.load`` reads it."""
        save_model(self, path)

    def to_onnx(self):
        """The fitted model as an ``onnx.ModelProto`` (probabilities or predictions out; see caviar.export.onnx)."""
        from caviar.export.onnx import to_onnx

        return to_onnx(self)

    def get_config(self) -> dict:
        """The model and training configuration as plain dicts."""
        return {"model": asdict(self.model_config()), "training": asdict(self.train_config())}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


class Classifier(ClassifierMixin, _Network):
    """A multilayer perceptron with batch norm and a softmax output, trained by mini-batch descent.

    Parameters mirror caviar.config.ModelConfig and TrainConfig; see docs/engine.md. Besides them:
    ``validation_fraction`` (held out for early stopping, only when ``early_stopping``),
    ``standardize`` (fit mean/std on the training data), ``shuffle``, ``random_state`` (None, an int,
    a RandomState or a Generator, scikit-learn's way; ``seed`` is its deprecated old name), ``dtype``,
    ``verbose`` (a line per epoch), ``warm_start`` (fit goes on from the fitted weights) and
    ``class_weight`` ("balanced", a dict {class: weight}, or None). ``fit`` and ``partial_fit`` take
    ``sample_weight``: the loss is the weighted mean over each batch, and batch norm's statistics and
    the input scaling are weighted alike, so a weight of 2 is a row counted twice.
    Every hyperparameter's default and bounds are caviar.hparams' (tests/test_hparams.py checks the
    signature against it); ``_parameter_constraints`` is derived from it.

    Learned: ``classes_``, ``n_features_in_`` (and ``feature_names_in_`` after a DataFrame),
    ``params_``, ``state_``, ``standardizer_``, ``history_``, ``loss_curve_``, ``n_iter_``, ``status_``,
    ``best_epoch_``.
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **{p.name: sklearn_constraint(p) for p in FIELDS},
        **CLASSIFIER_PARAMETERS,
    }

    classes_: np.ndarray

    def __init__(
        self,
        hidden: tuple[int, ...] = (128, 64),
        activation: str = "relu",
        batchnorm: bool = True,
        dropout: float = 0.0,
        l2: float = 0.0,
        optimizer: str = "adam",
        learning_rate: float = 1e-3,
        momentum: float = 0.9,
        beta1: float = 0.9,
        beta2: float = 0.999,
        rho: float = 0.99,
        epsilon: float = 1e-8,
        lr_decay: float = 0.0,
        decay: str = "none",
        decay_every: int = 10,
        batch_size: int = 64,
        epochs: int = 30,
        bn_momentum: float = 0.1,
        early_stopping: bool = False,
        patience: int = 10,
        min_delta: float = 0.0,
        validation_fraction: float = 0.1,
        standardize: bool = True,
        shuffle: bool = True,
        random_state: Any = None,
        dtype: str = "float64",
        verbose: bool = False,
        warm_start: bool = False,
        class_weight: Any = None,
        seed: Any = "deprecated",
    ) -> None:
        self.hidden = hidden
        self.activation = activation
        self.batchnorm = batchnorm
        self.dropout = dropout
        self.l2 = l2
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.beta1 = beta1
        self.beta2 = beta2
        self.rho = rho
        self.epsilon = epsilon
        self.lr_decay = lr_decay
        self.decay = decay
        self.decay_every = decay_every
        self.batch_size = batch_size
        self.epochs = epochs
        self.bn_momentum = bn_momentum
        self.early_stopping = early_stopping
        self.patience = patience
        self.min_delta = min_delta
        self.validation_fraction = validation_fraction
        self.standardize = standardize
        self.shuffle = shuffle
        self.random_state = random_state
        self.dtype = dtype
        self.verbose = verbose
        self.warm_start = warm_start
        self.class_weight = class_weight
        self.seed = seed

    # ----- hooks of the fitting loop ---------------------------------------------------------
    def _n_outputs(self) -> int:
        return len(self.classes_)

    def _loss_name(self) -> str:
        return "cross_entropy"

    def _prepare(self, X, y, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        X, y = validate_data(self, X, y, reset=reset, dtype=np.dtype(self.dtype), ensure_all_finite=True)
        check_classification_targets(y)
        return X, y

    def _encode(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        if not np.array_equal(self.classes_[idx], y):
            unknown = np.setdiff1d(np.unique(y), self.classes_)
            raise DataError(f"labels {unknown[:5].tolist()} were not among the classes {self.classes_.tolist()}")
        return idx.astype(np.int64)

    def _encode_fit(self, y: np.ndarray, warm: bool) -> np.ndarray:
        classes = np.unique(y)
        if warm and not np.array_equal(classes, self.classes_):
            raise DataError(
                f"warm_start needs the classes of the previous fit, {self.classes_.tolist()}; y has {classes.tolist()}"
            )
        self.classes_ = classes
        if len(classes) < 2:
            raise DataError(f"Classifier can't train when only one class is present (class {classes[0]!r})")
        return self._encode(y)

    def _encode_partial(self, y: np.ndarray, first: bool, classes) -> np.ndarray:
        if first:
            self.classes_ = np.unique(y if classes is None else classes)
            if len(self.classes_) < 2:
                raise DataError("Classifier can't train when only one class is present; pass classes=")
        return self._encode(y)

    def _encode_val(self, y) -> np.ndarray:
        return self._encode(np.asarray(y))

    def _fit_weights(self, yi: np.ndarray, w: np.ndarray | None) -> np.ndarray | None:
        """Sample weights times class weights; a single class left with weight is refused (one line)."""
        w = combined_weights(self.class_weight, self.classes_, yi, w)
        if w is not None:
            present = np.unique(yi[w > 0])
            if len(present) < 2:
                raise DataError(
                    f"Classifier can't train when only one class has weight (class {self.classes_[present[0]]!r})"
                )
        return w

    def _min_validation(self) -> int:
        return len(self.classes_)

    def _stratify(self, yi: np.ndarray) -> np.ndarray | None:
        return yi if np.bincount(yi).min() >= 2 else None

    def _val_score(self, X_val, y_val) -> Callable[[Trainer, dict], float | None]:
        return lambda trainer, row: row.get("val_accuracy")

    # ----- scikit-learn API ------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None, *, validation_data=None, callbacks=()) -> Classifier:
        """Train on (X, y), from scratch (or, with ``warm_start``, on from the fitted weights); returns self.

        ``sample_weight`` (n_samples,): the weight of each row in the loss (times its class's
        ``class_weight``). ``validation_data`` = (X_val, y_val[, sample_weight_val]) is scored every epoch
        (and monitored for early stopping instead of a held-out ``validation_fraction``); ``callbacks``
        are trainer callbacks (see caviar.train.Callback), e.g. a progress bar.
        """
        return self._fit(X, y, sample_weight, validation_data, callbacks)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None, sample_weight=None) -> Classifier:
        """One pass over (X, y), continuing from the current state (in order when shuffle=False);
        ``classes`` on the first call when y may not hold them all. ``class_weight="balanced"`` is refused
        here, as by scikit-learn's SGDClassifier: one pass's counts are not the data's."""
        if isinstance(self.class_weight, str):
            raise DataError(
                "class_weight='balanced' is not supported by partial_fit; pass a dict, e.g. from "
                "sklearn.utils.class_weight.compute_class_weight('balanced', classes=..., y=...)"
            )
        return self._partial_fit(X, y, sample_weight, classes)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n_samples, n_classes), columns in the order of ``classes_``."""
        return np.exp(self.predict_log_proba(X))

    def predict_log_proba(self, X) -> np.ndarray:
        """The log of ``predict_proba``, computed as a log-softmax (finite where a probability underflows)."""
        check_is_fitted(self, "params_")
        return log_softmax(_outputs64(self, self._standardized(self._check_X(X, reset=False))))

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row."""
        logp = self.predict_log_proba(X)  # first: NotFittedError (not AttributeError) before fit
        return self.classes_[np.argmax(logp, axis=1)]


def _outputs64(est: Any, X: np.ndarray) -> np.ndarray:
    """The network's outputs (N, n_out) for standardized rows, in float64 whatever the model's dtype:
    float32 matmuls round a row differently with its position in the batch (BLAS blocks rows), so a
    prediction would depend on the other rows by ~1e-7; in float64 that is below any tolerance that
    matters (scikit-learn's row-order and subset checks), at the price of a float64 matmul."""
    params = {n: a[None].astype(np.float64) for n, a in est.params_.items()}
    state = {n: a[None].astype(np.float64) for n, a in est.state_.items()}
    out, _, _ = forward(est.architecture_, params, state, np.asarray(X, np.float64), train=False, backend=Backend.NUMPY)
    return out[0]


class Regressor(RegressorMixin, _Network):
    """A multilayer perceptron with a linear output, trained on the mean squared error (or Huber's
    loss, ``loss="huber"``) by the same engine as the Classifier, following MLPRegressor's conventions:
    ``score`` is R², the target is standardized on the training part and predictions are mapped back
    (``target_scaler_``). The other parameters, ``sample_weight`` included, are the Classifier's
    (no ``class_weight``).
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **_Network._parameter_constraints,
        "loss": [StrOptions({"squared_error", "huber"})],
    }

    def __init__(
        self,
        hidden: tuple[int, ...] = (128, 64),
        activation: str = "relu",
        batchnorm: bool = True,
        dropout: float = 0.0,
        l2: float = 0.0,
        optimizer: str = "adam",
        learning_rate: float = 1e-3,
        momentum: float = 0.9,
        beta1: float = 0.9,
        beta2: float = 0.999,
        rho: float = 0.99,
        epsilon: float = 1e-8,
        lr_decay: float = 0.0,
        decay: str = "none",
        decay_every: int = 10,
        batch_size: int = 64,
        epochs: int = 30,
        bn_momentum: float = 0.1,
        early_stopping: bool = False,
        patience: int = 10,
        min_delta: float = 0.0,
        validation_fraction: float = 0.1,
        standardize: bool = True,
        shuffle: bool = True,
        random_state: Any = None,
        dtype: str = "float64",
        verbose: bool = False,
        warm_start: bool = False,
        loss: str = "squared_error",
        seed: Any = "deprecated",
    ) -> None:
        self.hidden = hidden
        self.activation = activation
        self.batchnorm = batchnorm
        self.dropout = dropout
        self.l2 = l2
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.beta1 = beta1
        self.beta2 = beta2
        self.rho = rho
        self.epsilon = epsilon
        self.lr_decay = lr_decay
        self.decay = decay
        self.decay_every = decay_every
        self.batch_size = batch_size
        self.epochs = epochs
        self.bn_momentum = bn_momentum
        self.early_stopping = early_stopping
        self.patience = patience
        self.min_delta = min_delta
        self.validation_fraction = validation_fraction
        self.standardize = standardize
        self.shuffle = shuffle
        self.random_state = random_state
        self.dtype = dtype
        self.verbose = verbose
        self.warm_start = warm_start
        self.loss = loss
        self.seed = seed

    # ----- hooks of the fitting loop ---------------------------------------------------------
    def _n_outputs(self) -> int:
        return 1

    def _loss_name(self) -> str:
        return self.loss

    def _prepare(self, X, y, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        arr = np.asarray(y)
        if arr.dtype.kind in "OUSV":
            bad = next((v for v in arr.ravel() if isinstance(v, str | bytes)), None)
            if bad is not None or arr.dtype.kind in "USV":
                shown = str(bad if bad is not None else arr.ravel()[0])
                raise DataError(f"Regressor needs a numeric target; y holds text ({shown!r})")
        X, y = validate_data(
            self, X, y, reset=reset, dtype=np.dtype(self.dtype), ensure_all_finite=True, y_numeric=True
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if y.ndim != 1:
            raise DataError(f"Regressor takes one target column, got y of shape {y.shape}")
        return X, y.astype(np.float64)

    def _encode_fit(self, y: np.ndarray, warm: bool) -> np.ndarray:
        return y

    def _encode_partial(self, y: np.ndarray, first: bool, classes) -> np.ndarray:
        return y

    def _encode_val(self, y) -> np.ndarray:
        return np.asarray(y, dtype=np.float64).ravel()

    def _fit_weights(self, y: np.ndarray, w: np.ndarray | None) -> np.ndarray | None:
        return w

    def _min_validation(self) -> int:
        return 1

    def _stratify(self, y: np.ndarray) -> None:
        return None

    def _history_row(self, row: dict[str, float], epoch: int) -> dict[str, float]:
        """No accuracy for a continuous target: the trainer's NaN columns are left out."""
        return {k: v for k, v in row.items() if k not in ("train_accuracy", "val_accuracy")} | {"epoch": epoch}

    def _fit_target_scaling(self, y: np.ndarray, w: np.ndarray | None) -> None:
        # unweighted: caviar.data.fit_target_scaler, the rule regression studies follow too
        self.target_scaler_ = fit_target_scaler(y) if w is None else weighted_standardizer(y.reshape(-1, 1), w)

    def _scaled(self, y: np.ndarray) -> np.ndarray:
        return scale_target(self.target_scaler_, y, self.dtype)

    def _val_score(self, X_val, y_val) -> Callable[[Trainer, dict], float | None]:
        """R² of the validation part (on the scaled target: R² does not change with the scaling)."""
        if X_val is None or y_val is None:
            return lambda trainer, row: None
        Xv, yv = self._standardized(X_val), self._scaled(y_val).astype(np.float64)

        def r2(trainer: Trainer, row: dict) -> float | None:
            pred = trainer.logits(Xv)[0, :, 0].astype(np.float64)
            return float(r2_score(yv, pred))

        return r2

    # ----- scikit-learn API ------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None, *, validation_data=None, callbacks=()) -> Regressor:
        """Train on (X, y), from scratch or (``warm_start``) on from the fitted weights; returns self
        (``sample_weight``, ``validation_data`` and ``callbacks`` as the Classifier's)."""
        return self._fit(X, y, sample_weight, validation_data, callbacks)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None) -> Regressor:
        """One pass over (X, y), continuing from the current state; the target scaling of the first call."""
        return self._partial_fit(X, y, sample_weight)

    def predict(self, X) -> np.ndarray:
        """The predicted target of each row (float64, in the target's units)."""
        check_is_fitted(self, "params_")
        out = _outputs64(self, self._standardized(self._check_X(X, reset=False)))
        return unscale_target(self.target_scaler_, out)


def load(path: str | Path | BinaryIO) -> Any:
    """The Classifier or Regressor stored in a model file (a path or a binary file object); it predicts
    exactly as the saved one did, with its feature names, ``n_iter_``, ``loss_curve_`` and history.
    ModelFileError if the file is missing, corrupt, foreign or inconsistent."""
    header, arrays = read_model_file(path)
    if header.get("kind") == "ensemble":  # k members averaged in probability (caviar.ensemble)
        from caviar.ensemble import ensemble_from_file

        return ensemble_from_file(path, header, arrays, load)
    params = check_header(path, header)
    make: type[_Network] = Regressor if header.get("kind") == REGRESSOR else Classifier
    try:
        est = make(**params)
    except TypeError as exc:
        raise ModelFileError(f"{path}: unknown parameter in header ({exc})") from None
    est.n_features_in_ = int(header["n_features_in"])
    if isinstance(est, Classifier):
        est.classes_ = np.asarray(header["classes"])
    else:
        est.target_scaler_ = target_scaling(path, arrays)
    m = est.model_config()
    arch = Architecture(est.n_features_in_, est._n_outputs(), m.hidden, m.activation, m.batchnorm)
    est.params_, est.state_, est.standardizer_ = model_weights(path, arrays, arch, np.dtype(est.dtype))
    est.history_ = header.get("history", [])
    est.n_iter_ = int(header.get("n_iter", len(est.history_)))
    est.loss_curve_ = list(header.get("loss_curve", [r["train_loss"] for r in est.history_]))
    if "feature_names_in" in header:
        est.feature_names_in_ = np.asarray(header["feature_names_in"], dtype=object)
    return est
