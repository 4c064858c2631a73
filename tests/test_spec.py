"""The study spec: every mistake is its own one-line SpecError; a valid spec loads with its defaults."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from caviar.config import MODEL_FIELDS, TRAIN_FIELDS, ModelConfig, TrainConfig
from caviar.errors import SpecError
from caviar.tune.samplers import CoarseToFineSampler
from caviar.tune.spec import ModelSection, StudySpec, TrainingSection, load_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MINIMAL = '[data]\ndataset = "digits"\n'


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path_or_dict) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path_or_dict)
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[data]\ndataset = \n", ["invalid TOML", "line 2"]),
        (
            MINIMAL + "[training]\nlearnig_rate = 0.1\n",
            ["unknown key 'training.learnig_rate' (did you mean 'learning_rate'?)"],
        ),
        (MINIMAL + "[traning]\nepochs = 3\n", ["unknown key 'traning' (did you mean 'training'?)"]),
        (MINIMAL + "[search.halving]\net = 3\n", ["unknown key 'search.halving.et' (did you mean 'eta'?)"]),
        (
            MINIMAL + '[model]\nactivation = "relux"\n',
            ["model.activation: 'relux' is not one of relu, leaky_relu, tanh, sigmoid"],
        ),
        (MINIMAL + '[training]\nepochs = "ten"\n', ["training.epochs: 'ten' should be a valid integer"]),
        (MINIMAL + "[training]\nbeta2 = 1.0\n", ["training.beta2: 1.0 should be less than 1"]),
        (
            MINIMAL + '[space]\nlearning_rate = {low = 0.1, high = 0.01, scale = "log"}\n',
            ["space.learning_rate: needs low < high, got low=0.1, high=0.01"],
        ),
        (
            MINIMAL + '[space]\nbeta1 = {low = 0.9, high = 1.0, scale = "one_minus_log"}\n',
            ["space.beta1: scale 'one_minus_log' needs 0 <= low < high < 1, got high=1.0"],
        ),
        (
            MINIMAL + '[space]\nl2 = {low = 0.0, high = 0.01, scale = "log"}\n',
            ["space.l2: scale 'log' needs 0 < low < high, got low=0.0"],
        ),
        (
            MINIMAL + '[space]\nactivation = {choices = ["relu", "relux"]}\n',
            ["space.activation: choice 'relux' is not allowed (one of relu, leaky_relu, tanh, sigmoid)"],
        ),
        (
            MINIMAL + "[space]\nlearnig_rate = {low = 1e-4, high = 1e-1}\n",
            ["space.learnig_rate: not a tunable hyperparameter (did you mean 'learning_rate'?)"],
        ),
        (MINIMAL + "[space]\nseed = {low = 1, high = 9}\n", ["space.seed: not a tunable hyperparameter"]),
        ('[data]\npath = "missing.csv"\n', ["data.path: file 'missing.csv' does not exist", "missing.csv"]),
        (
            '[data]\npath = "table.xlsx"\n',
            ["data.path: 'table.xlsx' should end in .csv, .csv.gz, .parquet, .npz, .npy"],
        ),
        ('[data]\ndataset = "mnist"\ndata_dir = "nowhere"\n', ["data.data_dir: folder 'nowhere' does not exist"]),
        ('[data]\ndataset = "digit"\n', ["data.dataset: 'digit' is not one of digits, iris"]),
        ('[data]\ndataset = "digits"\npath = "x.csv"\n', ["data.path"]),
        ("[study]\nseed = 1\n", ["data: is missing"]),
        (MINIMAL + "[model]\nhidden = [64]\ndepth = 2\n", ["model: give hidden or depth/width, not both"]),
        (
            MINIMAL + "[space]\nhidden = [[64]]\ndepth = {low = 1, high = 3}\n",
            ["space: tune hidden or depth/width, not both"],
        ),
        (MINIMAL + '[search]\nstrategy = "coarse_to_fine"\ntrials = 2\nrounds = 3\n', ["search.rounds: 3 rounds"]),
        (MINIMAL + '[search]\nstrategy = "sobel"\n', ["search.strategy: 'sobel' is not one of random, grid"]),
        (MINIMAL + "[search.halving]\nmin_epochs = 50\n[training]\nepochs = 10\n", ["search.halving.min_epochs"]),
        ("model = 3\n" + MINIMAL, ["model: expected a table, got 3"]),
    ],
)
def test_each_mistake_has_its_own_one_line_error(tmp_path, text, expected) -> None:
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}: "), message
    for fragment in expected:
        assert fragment in message, message


def test_missing_spec_file(tmp_path) -> None:
    assert "spec file" in error_of(tmp_path / "nope.toml")


def test_dict_spec_errors_have_no_file_prefix() -> None:
    assert error_of({"data": {"dataset": "digits"}, "model": {"activation": "relux"}}).startswith("model.activation:")


def test_valid_spec_loads_with_defaults(tmp_path) -> None:
    spec = load_spec(write(tmp_path, MINIMAL + "[study]\nseed = 5\n", name="mine.toml"))
    assert spec.study.name == "mine"
    assert spec.search.strategy == "random" and spec.search.trials == 20 and spec.search.workers == 1
    assert spec.search.seed == 5
    assert spec.search.metric == "val_accuracy" and spec.search.maximize
    assert spec.search.storage == f"sqlite:///{(tmp_path / 'mine.db').resolve().as_posix()}"
    assert spec.data.validation_fraction == 0.2 and spec.data.test_fraction == 0.2 and spec.data.standardize
    assert spec.base_configs() == (ModelConfig(), TrainConfig())
    assert len(spec.space) == 0
    assert spec.source == (tmp_path / "mine.toml").resolve()


def test_dict_spec_stores_in_cwd(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = load_spec({"data": {"dataset": "iris"}})
    assert spec.search.storage == f"sqlite:///{(tmp_path / 'caviar.db').resolve().as_posix()}"
    assert spec.study.name == "study"


def test_relative_paths_resolve_against_the_spec_folder(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "table.csv").write_text("a,label\n1,0\n", encoding="utf-8")
    path = write(folder, '[data]\npath = "table.csv"\n[search]\nstorage = "sqlite:///runs.db"\n')
    monkeypatch.chdir(tmp_path)
    spec = load_spec(path)
    assert Path(spec.data.path) == (folder / "table.csv").resolve()
    assert spec.search.storage == f"sqlite:///{(folder / 'runs.db').resolve().as_posix()}"
    assert load_spec({"data": {"dataset": "digits"}, "search": {"storage": "postgresql://h/db"}}).search.storage == (
        "postgresql://h/db"
    )


def test_configs_for_applies_a_trials_values() -> None:
    spec = load_spec(
        {
            "data": {"dataset": "digits"},
            "model": {"width": 64},
            "training": {"learning_rate": 0.5, "optimizer": "adam"},
            "space": {
                "learning_rate": {"low": 1e-4, "high": 1e-1, "scale": "log"},
                "depth": {"low": 1, "high": 3},
                "bn_beta": {"low": 0.8, "high": 0.99, "scale": "one_minus_log"},
                "batch_size": [32, 64],
            },
        }
    )
    model, train = spec.base_configs()
    assert model.hidden == (64, 64) and train.learning_rate == 0.5
    model, train = spec.configs_for({"learning_rate": 3e-3, "depth": 3, "bn_beta": 0.95, "batch_size": 32})
    assert model.hidden == (64, 64, 64)
    assert train.learning_rate == 3e-3  # the space wins over the fixed value
    assert train.bn_momentum == pytest.approx(0.05)
    assert train.batch_size == 32 and isinstance(train.batch_size, int)
    model, _ = spec.configs_for({"width": 32})
    assert model.hidden == (32, 32)
    model, _ = spec.configs_for({"hidden": [128, 32]})
    assert model.hidden == (128, 32)
    with pytest.raises(SpecError, match="did you mean 'learning_rate'"):
        spec.configs_for({"learnig_rate": 0.1})


def test_to_dict_is_json_and_round_trips() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = load_spec(
            {
                "data": {"dataset": "digits"},
                "search": {"strategy": "coarse_to_fine", "trials": 12, "rounds": 3, "halving": {"eta": 2}},
                "space": {"learning_rate": {"low": 1e-4, "high": 1e-1, "scale": "log"}, "activation": ["relu", "tanh"]},
            }
        )
    data = json.loads(json.dumps(spec.to_dict()))
    again = load_spec(data)
    assert again.to_dict() == spec.to_dict()
    assert again.space == spec.space
    assert isinstance(spec.sampler(), CoarseToFineSampler) and spec.sampler().rounds == 3


def test_overrides_set_dotted_keys() -> None:
    spec = load_spec({"data": {"dataset": "digits"}}, overrides={"search.trials": 4, "training.epochs": 2})
    assert spec.search.trials == 4 and spec.training.epochs == 2
    with pytest.raises(SpecError, match="unknown key 'search.trails'"):
        load_spec({"data": {"dataset": "digits"}}, overrides={"search.trails": 4})


def test_sections_cover_the_config_fields() -> None:
    assert set(TRAIN_FIELDS) == set(TrainingSection.model_fields)
    assert set(MODEL_FIELDS) | {"depth", "width"} == set(ModelSection.model_fields)
    assert set(StudySpec.model_fields) == {"study", "data", "model", "training", "search", "space_table"}


@pytest.mark.parametrize("name", ["digits", "mnist1d"])
def test_examples_load(name) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the examples use the right scales
        spec = load_spec(EXAMPLES / f"{name}.toml")
    assert spec.study.name == name
    assert spec.search.storage.endswith(f"examples/{name}.db")
    values = spec.space.decode([0.5] * len(spec.space))
    spec.configs_for(values)


def test_mnist_example_asks_for_its_data_folder() -> None:
    message = error_of(EXAMPLES / "mnist.toml")
    assert "data.data_dir" in message and "does not exist" in message
    spec = load_spec(EXAMPLES / "mnist.toml", overrides={"data.data_dir": str(EXAMPLES)})
    assert spec.data.dataset == "mnist" and spec.search.halving is not None


def test_space_order_survives_a_sorted_json_round_trip():
    """Stored unit points decode to the same values after storage re-sorts the spec's keys."""
    import numpy as np

    table = {
        "learning_rate": {"low": 1e-4, "high": 1e-1, "scale": "log"},
        "beta1": {"low": 0.8, "high": 0.99, "scale": "one_minus_log"},
    }
    spec = load_spec({"data": {"dataset": "iris"}, "space": table})
    stored = json.loads(json.dumps(spec.to_dict(), sort_keys=True))
    again = load_spec(stored)
    u = np.array([0.25, 0.75])
    assert again.space.names == spec.space.names
    assert again.space.decode(u) == spec.space.decode(u)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("[training]\nbatch_size = 1\n", "training.batch_size: 1 must be >= 2 with batchnorm = true"),
        ("[space]\nbatch_size = {low = 1, high = 64}\n", "space.batch_size: can give batch_size = 1"),
        ("[training]\nbatch_size = 1\n[space]\nbatchnorm = [false, true]\n", "space.batchnorm: can give"),
    ],
)
def test_batch_norm_with_batches_of_one_is_refused_when_the_spec_loads(tmp_path, extra, fragment) -> None:
    """Once every trial of such a spec ended FAILED ("batch norm needs at least 2 samples")."""
    path = write(tmp_path, MINIMAL + extra)
    message = error_of(path)
    assert message.startswith(f"{path}: {fragment}"), message


@pytest.mark.parametrize("name", ["patience", "decay_every"])
def test_a_boolean_is_not_an_integer(tmp_path, name) -> None:
    message = error_of(write(tmp_path, MINIMAL + f"[training]\n{name} = true\n"))
    assert f"training.{name}: True is a boolean, not a number" in message
