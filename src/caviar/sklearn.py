"""``caviar.Classifier``: the engine as a scikit-learn estimator (a population of one).

It follows scikit-learn's conventions: hyperparameters are constructor arguments stored as given,
``fit`` returns self, learned attributes end in ``_``, bad input raises ValueError (caviar's
errors subclass it). It drops into Pipeline, cross_val_score and GridSearchCV.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from numbers import Integral, Real
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from caviar.backend import Backend
from caviar.config import ModelConfig, TrainConfig
from caviar.data.preprocess import Standardizer
from caviar.errors import DataError, ModelFileError
from caviar.hparams import FIELDS, MODEL, TRAIN, HParam, canonical
from caviar.model_io import check_header, model_weights, read_model_file, save_classifier
from caviar.nn.losses import softmax
from caviar.nn.network import Architecture, forward
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


#: The Classifier's parameters that are not hyperparameters of the registry, and their constraints.
ESTIMATOR_PARAMETERS: dict[str, list[Any]] = {
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "standardize": ["boolean"],
    "shuffle": ["boolean"],
    "seed": [Interval(Integral, 0, None, closed="left")],
    "dtype": [StrOptions({"float32", "float64"}), type, np.dtype],
    "verbose": ["verbose"],
}


class Classifier(ClassifierMixin, BaseEstimator):
    """A multilayer perceptron with batch norm and a softmax output, trained by mini-batch descent.

    Parameters mirror caviar.config.ModelConfig and TrainConfig; see docs/engine.md. Besides them:
    ``validation_fraction`` (held out for early stopping, only when ``early_stopping``),
    ``standardize`` (fit mean/std on the training data), ``shuffle``, ``seed``, ``dtype``.
    Every hyperparameter's default and bounds are caviar.hparams' (tests/test_hparams.py checks the
    signature against it); ``_parameter_constraints`` is derived from it.
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **{p.name: sklearn_constraint(p) for p in FIELDS},
        **ESTIMATOR_PARAMETERS,
    }

    # learned in fit / partial_fit / load (class-level annotations only: no attribute before then)
    params_: dict[str, np.ndarray]
    state_: dict[str, np.ndarray]

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
        seed: int = 0,
        dtype: str = "float32",
        verbose: bool = False,
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
        self.seed = seed
        self.dtype = dtype
        self.verbose = verbose

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

    def set_params(self, **params: Any) -> Classifier:
        """scikit-learn's set_params, with the registry's aliases (``lr``, ``eps``...) for their names.

        The constructor takes the registered names only (scikit-learn reads the parameters from its
        signature); set_params, and so GridSearchCV's grids, take the aliases too.
        """
        return super().set_params(**{canonical(name): value for name, value in params.items()})

    def _validate_params(self) -> None:
        """Called by fit: the registry's checks first (caviar's one-line messages), then scikit-learn's."""
        self.train_config()
        super()._validate_params()

    # ----- data ------------------------------------------------------------------------------
    def _check_X(self, X, reset: bool) -> np.ndarray:
        X = validate_data(self, X, reset=reset, dtype=np.dtype(self.dtype), ensure_all_finite=True)
        return X

    def _prepare(self, X, y, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        X, y = validate_data(self, X, y, reset=reset, dtype=np.dtype(self.dtype), ensure_all_finite=True)
        check_classification_targets(y)
        return X, y

    def _encode(self, y: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        if not np.array_equal(self.classes_[idx], y):
            unknown = np.setdiff1d(np.unique(y), self.classes_)
            raise DataError(f"labels {unknown[:5].tolist()} were not among the classes {self.classes_.tolist()}")
        return idx.astype(np.int64)

    def _new_trainer(self, n_features: int, one_pass: bool = False) -> Trainer:
        """A population of one for these parameters; ``one_pass`` (partial_fit): early stopping off,
        so that a pass never retires the model."""
        model, train = self.model_config(), self.train_config()
        if one_pass:
            train = replace(train, early_stopping=False)
        arch = Architecture(
            n_in=n_features,
            n_out=len(self.classes_),
            hidden=model.hidden,
            activation=model.activation,
            batchnorm=model.batchnorm,
        )
        hp = hyperparameters_from([{}], train, dropout=model.dropout)
        return Trainer(
            arch, train, hp, member_ids=[0], seed=int(self.seed), dtype=np.dtype(self.dtype), shuffle=bool(self.shuffle)
        )

    # ----- scikit-learn API ------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, *, validation_data=None, callbacks=()) -> Classifier:
        """Train from scratch on (X, y); returns self.

        ``validation_data`` = (X_val, y_val) is scored every epoch (and monitored for early stopping
        instead of a held-out ``validation_fraction``); ``callbacks`` are trainer callbacks
        (see caviar.train.Callback), e.g. a progress bar.
        """
        X, y = self._prepare(X, y, reset=True)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise DataError(f"Classifier can't train when only one class is present (class {self.classes_[0]!r})")
        yi = self._encode(y)
        X_val = y_val = None
        if validation_data is not None:
            X_val = self._check_X(validation_data[0], reset=False)
            y_val = self._encode(np.asarray(validation_data[1]))
        elif self.early_stopping:
            X, X_val, yi, y_val = self._split_validation(X, yi)
        self.standardizer_ = Standardizer().fit(X) if self.standardize else None
        Xs = self._standardized(X)
        self._check_batch(len(yi))
        trainer = self._new_trainer(X.shape[1])
        trainer.fit(Xs, yi, None if X_val is None else self._standardized(X_val), y_val, callbacks=callbacks)
        self._adopt(trainer)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None) -> Classifier:
        """One pass over (X, y), continuing from the current state (in order when shuffle=False)."""
        first = not hasattr(self, "classes_")
        X, y = self._prepare(X, y, reset=first)
        if first:
            self.classes_ = np.unique(y if classes is None else classes)
            if len(self.classes_) < 2:
                raise DataError("Classifier can't train when only one class is present; pass classes=")
            self.standardizer_ = Standardizer().fit(X) if self.standardize else None
        yi = self._encode(y)
        self._check_batch(len(yi))
        trainer = getattr(self, "_trainer", None)
        if trainer is None or trainer.K == 0:
            trainer = self._new_trainer(X.shape[1], one_pass=True)
            if hasattr(self, "params_"):  # fitted (or loaded): go on from its weights, a fresh optimizer
                trainer.load_weights(
                    {n: a[None] for n, a in self.params_.items()}, {n: a[None] for n, a in self.state_.items()}
                )
        trainer.train_epoch(self._standardized(X), yi)
        trainer.end_epoch()
        self._trainer = trainer
        self.params_, self.state_ = trainer.member_weights(0)
        self.history_ = trainer.histories[0].rows
        self.n_iter_ = trainer.epoch
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n_samples, n_classes), columns in the order of ``classes_``."""
        check_is_fitted(self, "params_")
        return softmax(_outputs64(self, self._standardized(self._check_X(X, reset=False))))

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row."""
        proba = self.predict_proba(X)  # first: NotFittedError (not AttributeError) before fit
        return self.classes_[np.argmax(proba, axis=1)]

    # ----- helpers ---------------------------------------------------------------------------
    @property
    def architecture_(self) -> Architecture:
        check_is_fitted(self, "params_")
        m = self.model_config()
        return Architecture(self.n_features_in_, len(self.classes_), m.hidden, m.activation, m.batchnorm)

    def _standardized(self, X: np.ndarray) -> np.ndarray:
        s = getattr(self, "standardizer_", None)
        return X if s is None else s.transform(X)

    def _check_batch(self, n: int) -> None:
        if n < 2 and self.batchnorm:
            raise DataError(f"cannot train on {n} sample: batch norm needs at least 2 samples per batch")

    def _split_validation(self, X, yi):
        n_val = max(int(round(self.validation_fraction * len(yi))), len(self.classes_))
        if len(yi) - n_val < 2:
            raise DataError(f"too few samples ({len(yi)}) to hold out a validation split")
        counts = np.bincount(yi)
        stratify = yi if counts.min() >= 2 else None
        return train_test_split(X, yi, test_size=n_val, random_state=int(self.seed), stratify=stratify)

    def _adopt(self, trainer: Trainer) -> None:
        params, state = trainer.stacked_kept()
        self.params_ = {n: a[0] for n, a in params.items()}
        self.state_ = {n: a[0] for n, a in state.items()}
        hist = trainer.histories[0]
        self.history_ = hist.rows
        self.status_ = hist.status
        self.best_epoch_ = hist.best_epoch
        self.n_iter_ = len(hist.rows)
        self.loss_curve_ = [r["train_loss"] for r in hist.rows]
        self._trainer = trainer

    def save(self, path) -> None:
        """Write the fitted model to one .npz file (see docs/model-format.md)."""
        save_classifier(self, path)

    def to_onnx(self):
        """The fitted model as an ``onnx.ModelProto`` (probabilities out; see caviar.export.onnx)."""
        from caviar.export.onnx import to_onnx

        return to_onnx(self)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags

    def get_config(self) -> dict:
        """The model and training configuration as plain dicts."""
        return {"model": asdict(self.model_config()), "training": asdict(self.train_config())}


def _outputs64(est: Any, X: np.ndarray) -> np.ndarray:
    """The network's outputs (N, n_out) for standardized rows, in float64 whatever the model's dtype:
    float32 matmuls round a row differently with its position in the batch (BLAS blocks rows), so a
    prediction would depend on the other rows by ~1e-7; in float64 that is below any tolerance that
    matters (scikit-learn's row-order and subset checks), at the price of a float64 matmul."""
    params = {n: a[None].astype(np.float64) for n, a in est.params_.items()}
    state = {n: a[None].astype(np.float64) for n, a in est.state_.items()}
    out, _, _ = forward(est.architecture_, params, state, np.asarray(X, np.float64), train=False, backend=Backend.NUMPY)
    return out[0]


class Regressor(RegressorMixin, BaseEstimator):
    """A multilayer perceptron with a linear output, trained on the mean squared error (or Huber's
    loss, ``loss="huber"``) by the same engine as the Classifier, following MLPRegressor's conventions:
    ``score`` is R², the target is standardized on the training part and predictions are mapped back
    (``target_scaler_``). The other parameters are the Classifier's.
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **Classifier._parameter_constraints,
        "loss": [StrOptions({"squared_error", "huber"})],
    }

    params_: dict[str, np.ndarray]
    state_: dict[str, np.ndarray]

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
        seed: int = 0,
        dtype: str = "float32",
        verbose: bool = False,
        loss: str = "squared_error",
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
        self.seed = seed
        self.dtype = dtype
        self.verbose = verbose
        self.loss = loss

    model_config = Classifier.model_config
    train_config = Classifier.train_config
    _check_X = Classifier._check_X
    _standardized = Classifier._standardized
    _check_batch = Classifier._check_batch
    _adopt = Classifier._adopt
    get_config = Classifier.get_config

    def set_params(self, **params: Any) -> Regressor:
        """scikit-learn's set_params, with the registry's aliases (as the Classifier's)."""
        return super().set_params(**{canonical(name): value for name, value in params.items()})

    def _validate_params(self) -> None:
        self.train_config()
        super()._validate_params()

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

    def _new_trainer(self, n_features: int, one_pass: bool = False) -> Trainer:
        model, train = self.model_config(), self.train_config()
        if one_pass:
            train = replace(train, early_stopping=False)
        arch = Architecture(n_features, 1, model.hidden, model.activation, model.batchnorm)
        hp = hyperparameters_from([{}], train, dropout=model.dropout)
        return Trainer(
            arch,
            train,
            hp,
            member_ids=[0],
            seed=int(self.seed),
            dtype=np.dtype(self.dtype),
            shuffle=bool(self.shuffle),
            loss=self.loss,
        )

    def _scaled_target(self, y: np.ndarray) -> np.ndarray:
        mean, std = self._target_stats()
        return ((y - mean) / std).astype(np.dtype(self.dtype))

    def _target_stats(self) -> tuple[float, float]:
        t = self.target_scaler_
        assert t.mean is not None and t.std is not None, "fitted in fit / partial_fit"
        return float(t.mean[0]), float(t.std[0])

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, *, validation_data=None, callbacks=()) -> Regressor:
        """Train from scratch on (X, y); returns self (``validation_data`` and ``callbacks`` as the Classifier's)."""
        X, y = self._prepare(X, y, reset=True)
        X_val = y_val = None
        if validation_data is not None:
            X_val = self._check_X(validation_data[0], reset=False)
            y_val = np.asarray(validation_data[1], dtype=np.float64).ravel()
        elif self.early_stopping:
            n_val = max(int(round(self.validation_fraction * len(y))), 1)
            if len(y) - n_val < 2:
                raise DataError(f"too few samples ({len(y)}) to hold out a validation split")
            X, X_val, y, y_val = train_test_split(X, y, test_size=n_val, random_state=int(self.seed))
        self.target_scaler_ = Standardizer().fit(y.reshape(-1, 1))
        self.standardizer_ = Standardizer().fit(X) if self.standardize else None
        self._check_batch(len(y))
        trainer = self._new_trainer(X.shape[1])
        Xv = None if X_val is None else self._standardized(X_val)
        yv = None if y_val is None else self._scaled_target(y_val)
        trainer.fit(self._standardized(X), self._scaled_target(y), Xv, yv, callbacks=callbacks)
        self._adopt(trainer)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y) -> Regressor:
        """One pass over (X, y), continuing from the current state; the target scaling of the first call."""
        first = not hasattr(self, "params_")
        X, y = self._prepare(X, y, reset=first)
        if first:
            self.target_scaler_ = Standardizer().fit(y.reshape(-1, 1))
            self.standardizer_ = Standardizer().fit(X) if self.standardize else None
        self._check_batch(len(y))
        trainer = getattr(self, "_trainer", None)
        if trainer is None or trainer.K == 0:
            trainer = self._new_trainer(X.shape[1], one_pass=True)
            if not first:
                trainer.load_weights(
                    {n: a[None] for n, a in self.params_.items()}, {n: a[None] for n, a in self.state_.items()}
                )
        trainer.train_epoch(self._standardized(X), self._scaled_target(y))
        trainer.end_epoch()
        self._trainer = trainer
        self.params_, self.state_ = trainer.member_weights(0)
        self.history_ = trainer.histories[0].rows
        self.n_iter_ = trainer.epoch
        self.loss_curve_ = [r["train_loss"] for r in self.history_]
        return self

    def predict(self, X) -> np.ndarray:
        """The predicted target of each row (float64, in the target's units)."""
        check_is_fitted(self, "params_")
        out = _outputs64(self, self._standardized(self._check_X(X, reset=False)))
        mean, std = self._target_stats()
        return out[:, 0] * std + mean

    @property
    def architecture_(self) -> Architecture:
        check_is_fitted(self, "params_")
        m = self.model_config()
        return Architecture(self.n_features_in_, 1, m.hidden, m.activation, m.batchnorm)

    def to_onnx(self):
        """The fitted model as an ``onnx.ModelProto`` (predictions out; see caviar.export.onnx)."""
        from caviar.export.onnx import to_onnx

        return to_onnx(self)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


def load(path: str | Path | BinaryIO) -> Classifier:
    """The Classifier stored in a model file (a path or a binary file object); it predicts exactly as
    the saved one did. ModelFileError if the file is missing, corrupt, foreign or inconsistent."""
    header, arrays = read_model_file(path)
    if header.get("kind") == "ensemble":  # k members averaged in probability (caviar.ensemble)
        from caviar.ensemble import ensemble_from_file

        return ensemble_from_file(path, header, arrays, load)  # type: ignore[return-value]
    params = check_header(path, header)
    try:
        clf = Classifier(**params)
    except TypeError as exc:
        raise ModelFileError(f"{path}: unknown parameter in header ({exc})") from None
    clf.n_features_in_ = int(header["n_features_in"])
    clf.classes_ = np.asarray(header["classes"])
    m = clf.model_config()
    arch = Architecture(clf.n_features_in_, len(clf.classes_), m.hidden, m.activation, m.batchnorm)
    clf.params_, clf.state_, clf.standardizer_ = model_weights(path, arrays, arch, np.dtype(clf.dtype))
    clf.history_ = header.get("history", [])
    clf.n_iter_ = int(header.get("n_iter", len(clf.history_)))
    clf.loss_curve_ = list(header.get("loss_curve", [r["train_loss"] for r in clf.history_]))
    if "feature_names_in" in header:
        clf.feature_names_in_ = np.asarray(header["feature_names_in"], dtype=object)
    return clf
