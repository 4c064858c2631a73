"""The hyperparameter registry is the one source of truth: every face accepts exactly its fields and bounds.

The faces: the config dataclasses and validation, the study spec's [model]/[training], the [space]
table, the Classifier, ``caviar train``, panda's Python API, its HTTP API and the page's control
list. For each registered field a value just inside its bounds is accepted and one just outside is
refused with one line; each alias works in every face (or the registry has none).
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import fields
from typing import Any

import numpy as np
import pytest

from caviar import hparams
from caviar.config import PER_MEMBER, ModelConfig, TrainConfig, static_key
from caviar.errors import CaviarError, SpecError
from caviar.hparams import ALIASES, BY_NAME, FIELDS, HPARAMS, LIVE, HParam
from caviar.sklearn import CLASSIFIER_PARAMETERS, Classifier
from caviar.tune.space import TUNABLE
from caviar.tune.spec import ModelSection, TrainingSection, load_spec
from caviar.validation import check_configs, check_value

DATA = {"dataset": "digits"}


# ------------------------------------------------------------------------------------------ probes
def inside(p: HParam) -> list[Any]:
    """Values just inside the field's bounds (and each choice), all of which it must accept."""
    if p.kind == "bool":
        return [True, False]
    if p.kind == "choice":
        return list(p.choices)
    if p.kind == "widths":
        return [(1,), (), (7, 3)]
    b, out = p.bounds, []
    if b.low is not None:
        out.append(b.low + 1 if p.kind == "int" and b.low_open else b.low)
        if b.low_open and p.kind == "float":
            out[-1] = math.nextafter(b.low, math.inf)
    if b.high is not None:
        out.append(math.nextafter(b.high, -math.inf) if b.high_open else b.high)
    return out


def outside(p: HParam) -> list[Any]:
    """Values just outside the field's bounds, of the wrong type, or not a choice: all refused."""
    if p.kind == "bool":
        return [1, 0, "true"]
    if p.kind == "choice":
        return [p.choices[0] + "x", 1]
    if p.kind == "widths":
        return [(3, 0), (True,), (2.5,)]
    b, out = p.bounds, [True]  # a boolean is never a number
    if b.low is not None:
        out.append(b.low if b.low_open else (b.low - 1 if p.kind == "int" else math.nextafter(b.low, -math.inf)))
    if b.high is not None:
        out.append(b.high if b.high_open else math.nextafter(b.high, math.inf))
    if p.kind == "float":
        out.append(math.inf)
    else:
        out.append(b.low + 1.5 if b.low is not None else 1.5)  # not an integer
    return out


def base_for(name: str) -> dict[str, dict[str, Any]]:
    """The other values a probe of ``name`` needs so that no rule across fields refuses it."""
    return {"model": {"batchnorm": False}} if name == "batch_size" else {}


def spec_with(p: HParam, value: Any, key: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"data": DATA, **base_for(p.name)}
    spec.setdefault(p.section, {})[key or p.name] = list(value) if isinstance(value, tuple) else value
    return spec


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message, message
    return message


def numeric(p: HParam) -> bool:
    return p.kind in ("float", "int")


CONFIG_FIELDS = [pytest.param(p, id=p.name) for p in FIELDS]
TUNABLE_PARAMS = [pytest.param(p, id=p.name) for p in HPARAMS]


# ------------------------------------------------------------------------------------------ the registry
def test_registry_is_well_formed() -> None:
    assert len(BY_NAME) == len(HPARAMS)
    assert not set(ALIASES) & set(BY_NAME)  # an alias is never also a name
    for p in HPARAMS:
        assert p.help and p.default is not None
        if p.is_field:
            assert p.accepts(p.default), p.name
        assert (p.kind == "choice") == bool(p.choices), p.name
        assert p.scale in ("linear", "log", "one_minus_log", "int", "int_log", "choice"), p.name
        if p.kind in ("bool", "choice", "widths"):
            widths = hparams.Bounds(1, hparams.MAX_WIDTH)  # a width is an integer in [1, MAX_WIDTH]
            assert p.scale == "choice" and p.bounds == (widths if p.kind == "widths" else hparams.Bounds()), p.name
        if p.kind == "int":
            assert p.scale in ("int", "int_log"), p.name
        if p.live or p.fork_scale:
            assert p.per_member, f"{p.name}: only per-member numbers can change while a model trains"
    assert {p.name for p in HPARAMS if p.scale == "one_minus_log"} == {"momentum", "beta1", "beta2", "rho", "bn_beta"}
    assert {p.name for p in HPARAMS if p.scale == "log"} >= {"learning_rate", "l2", "epsilon"}
    assert hparams.optimizer_betas("adam") == ("beta1", "beta2")
    assert hparams.optimizer_betas("nesterov") == ("momentum",) and hparams.optimizer_betas("sgd") == ()


def test_config_dataclasses_are_the_registry() -> None:
    for cls, owner in ((ModelConfig, "model"), (TrainConfig, "train")):
        registered = hparams.fields_of(owner)  # type: ignore[arg-type]
        assert [(f.name, f.default) for f in fields(cls)] == [(p.name, p.default) for p in registered]
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert tuple(p.name for p in (*hparams.TRAIN, *hparams.MODEL) if p.per_member) == PER_MEMBER
    statics = {k for k, _ in static_key(ModelConfig(), TrainConfig())}
    assert statics == {p.name for p in FIELDS if not p.per_member}


# ------------------------------------------------------------------------------------------ the three disagreements
BATCH_NORM_ONE = [
    ({"training": {"batch_size": 1}}, "training.batch_size: 1 must be >= 2 with batchnorm = true"),
    ({"space": {"batch_size": {"low": 1, "high": 64}}}, "space.batch_size: can give batch_size = 1"),
    ({"space": {"batch_size": [1, 32]}}, "space.batch_size: can give batch_size = 1"),
    (
        {"training": {"batch_size": 1}, "space": {"batchnorm": [True, False]}},
        "space.batchnorm: can give batch_size = 1 with batchnorm = True",
    ),
    (
        {"space": {"batchnorm": [False, True], "batch_size": {"low": 1, "high": 8, "scale": "int_log"}}},
        "space.batch_size: can give batch_size = 1 with batchnorm = True",
    ),
]


@pytest.mark.parametrize(("extra", "message"), BATCH_NORM_ONE)
def test_batch_size_one_with_batch_norm_is_refused_when_the_spec_loads(extra, message) -> None:
    with pytest.raises(SpecError) as info:
        load_spec({"data": DATA, **extra})
    assert message in one_line(info.value)
    assert "batch norm needs at least 2 samples per batch" in str(info.value)


def test_batch_size_one_without_batch_norm_loads() -> None:
    load_spec({"data": DATA, "model": {"batchnorm": False}, "training": {"batch_size": 1}})
    load_spec({"data": DATA, "model": {"batchnorm": False}, "space": {"batch_size": [1, 2]}})
    with pytest.raises(CaviarError, match="batch_size: 1 must be >= 2 with batchnorm = true"):
        check_configs(ModelConfig(batchnorm=True), TrainConfig(batch_size=1))
    with pytest.raises(ValueError, match="batch_size: 1 must be >= 2"):
        Classifier(batch_size=1).train_config()
    assert Classifier(batch_size=1, batchnorm=False).train_config().batch_size == 1


def test_decay_rate_rule_covers_the_space() -> None:
    with pytest.raises(
        SpecError, match="space.decay: can give lr_decay = 1.5 with decay = 'step', but lr_decay must be"
    ):
        load_spec({"data": DATA, "training": {"lr_decay": 1.5}, "space": {"decay": ["none", "step"]}})
    with pytest.raises(SpecError, match="space.lr_decay: can give lr_decay = 1.0 with decay = 'exponential'"):
        load_spec(
            {"data": DATA, "training": {"decay": "exponential"}, "space": {"lr_decay": {"low": 0.1, "high": 1.0}}}
        )
    load_spec({"data": DATA, "training": {"lr_decay": 1.5}, "space": {"decay": ["none", "inverse_time"]}})


@pytest.mark.parametrize("name", ["patience", "decay_every", "epochs", "batch_size"])
def test_a_boolean_is_never_an_integer(name) -> None:
    p = BY_NAME[name]
    with pytest.raises(SpecError, match=rf"training\.{name}: True is a boolean, not a number"):
        load_spec(spec_with(p, True))
    with pytest.raises(SpecError, match=rf"space\.{name}: choice True is not allowed"):
        load_spec({"data": DATA, "space": {name: [True, 3]}})
    with pytest.raises(CaviarError, match=rf"{name}: True is not allowed; expected an integer"):
        check_value(name, True)
    with pytest.raises(ValueError, match=rf"{name}: True is not allowed"):
        Classifier(**{name: True}).train_config()


# ------------------------------------------------------------------------------------------ every face, every field
@pytest.mark.parametrize("p", CONFIG_FIELDS)
def test_validation_accepts_exactly_the_registered_values(p: HParam) -> None:
    for value in inside(p):
        check_value(p.name, value)
    for value in outside(p):
        with pytest.raises(CaviarError) as info:
            check_value(p.name, value, "where: ")
        assert one_line(info.value).startswith(f"where: {p.name}: ")


def test_spec_sections_are_the_registered_fields() -> None:
    model = {p.name for p in HPARAMS if p.section == "model" and p.fixable}
    training = {p.name for p in HPARAMS if p.section == "training" and p.fixable}
    assert set(ModelSection.model_fields) == model and set(TrainingSection.model_fields) == training
    for section in (ModelSection, TrainingSection):
        for name, info in section.model_fields.items():
            assert info.default == (BY_NAME[name].default if BY_NAME[name].is_field else None), name


@pytest.mark.parametrize("p", CONFIG_FIELDS)
def test_spec_accepts_exactly_the_registered_values(p: HParam) -> None:
    for value in inside(p):
        spec = load_spec(spec_with(p, value))
        model, train = spec.base_configs()
        assert getattr(model if p.owner == "model" else train, p.name) == value
    for value in outside(p):
        with pytest.raises(SpecError) as info:
            load_spec(spec_with(p, value))
        assert one_line(info.value).startswith(f"{p.section}.{p.name}"), (value, str(info.value))


@pytest.mark.parametrize("p", TUNABLE_PARAMS)
def test_space_accepts_exactly_the_registered_values(p: HParam) -> None:
    assert set(TUNABLE) == set(BY_NAME)
    assert TUNABLE[p.name].scale == p.scale
    spec = {"data": DATA, **base_for(p.name)}

    def entry(value: Any, other_end: bool) -> Any:
        if not numeric(p):
            return [list(value) if isinstance(value, tuple) else value]
        if p.kind == "int" and not isinstance(value, int):
            return {"low": value, "high": value + 10}
        if other_end:  # value is a high end: pair it with a low end inside
            return {"low": inside(p)[0], "high": value}
        width = 1 if p.kind == "int" else max(abs(value), 1e-3)
        return {"low": value, "high": value + width} if value is not math.inf else {"low": 0.5, "high": value}

    b = p.bounds
    ends = inside(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, value in enumerate(ends):
            is_high = numeric(p) and b.high is not None and i == len(ends) - 1
            load_spec({**spec, "space": {p.name: entry(value, is_high)}})
        for value in outside(p):
            if numeric(p) and isinstance(value, bool):
                table = [value]  # a boolean among the choices of a number
            else:
                is_high = numeric(p) and b.high is not None and value >= b.high
                table = entry(value, is_high)
            with pytest.raises(SpecError) as info:
                load_spec({**spec, "space": {p.name: table}})
            assert one_line(info.value).startswith(f"space.{p.name}"), (value, str(info.value))


def test_classifier_signature_lists_exactly_the_registered_fields() -> None:
    params = inspect.signature(Classifier.__init__).parameters
    names = [n for n in params if n != "self"]
    assert set(names) == {p.name for p in FIELDS} | set(CLASSIFIER_PARAMETERS)
    for p in FIELDS:
        assert params[p.name].default == p.default, p.name
    assert set(Classifier._parameter_constraints) == set(names)


@pytest.mark.parametrize("p", CONFIG_FIELDS)
def test_classifier_accepts_exactly_the_registered_values(p: HParam) -> None:
    base = {"batchnorm": False} if p.name == "batch_size" else {}
    for value in inside(p):
        clf = Classifier(**{**base, p.name: value})
        clf._validate_params()  # what fit checks first: the registry, then scikit-learn's constraints
        config = clf.model_config() if p.owner == "model" else clf.train_config()
        assert getattr(config, p.name) == value
    for value in outside(p):
        with pytest.raises(ValueError) as info:
            Classifier(**{**base, p.name: value})._validate_params()
        assert one_line(info.value).startswith(f"{p.name}: "), (value, str(info.value))


# ------------------------------------------------------------------------------------------ aliases
ALIAS_CASES = [pytest.param(alias, name, id=alias) for alias, name in ALIASES.items()]


def test_every_alias_names_a_live_field() -> None:
    assert ALIASES == {"lr": "learning_rate", "eps": "epsilon", "weight_decay": "l2", "bn": "bn_momentum"}
    assert set(ALIASES.values()) <= set(LIVE)


@pytest.mark.parametrize(("alias", "name"), ALIAS_CASES)
def test_alias_works_in_the_spec_the_space_and_the_classifier(alias: str, name: str) -> None:
    p = BY_NAME[name]
    value = p.default or 1e-4
    _, train = load_spec(spec_with(p, value, key=alias)).base_configs()
    assert getattr(train, name) == value
    with pytest.raises(SpecError, match="give one of them"):
        load_spec({"data": DATA, p.section: {name: value, alias: value}})
    low, high = value / 2, value
    space = load_spec({"data": DATA, "space": {alias: {"low": low, "high": high}}}).space
    assert space.names == (name,)
    assert load_spec({"data": DATA, "space": {alias: {"low": low, "high": high}}}).configs_for({alias: low})[1]
    clf = Classifier().set_params(**{alias: value})
    assert getattr(clf, name) == value and alias not in clf.get_params()
    assert check_value(alias, value) == value
    with pytest.raises(CaviarError, match=f"{name}: -1 is not allowed"):
        check_value(alias, -1)


def test_classifier_grid_search_takes_an_alias() -> None:
    from sklearn.model_selection import GridSearchCV

    X = np.random.default_rng(0).standard_normal((40, 3))
    y = np.array([0, 1] * 20)
    grid = GridSearchCV(Classifier(hidden=(4,), epochs=1), {"lr": [1e-3, 1e-2]}, cv=2).fit(X, y)
    assert grid.best_estimator_.learning_rate in (1e-3, 1e-2)


# ------------------------------------------------------------------------------------------ caviar train
class _Reached(Exception):
    """Raised where `caviar train` starts loading data: every check before it passed."""


@pytest.fixture
def train_cli(monkeypatch):
    """Run `caviar train ARGS` through typer's CliRunner up to the data loading; returns (result, params)."""
    from typer.testing import CliRunner

    import caviar.prepared
    from caviar.cli import app

    seen: dict[str, Any] = {}
    original = Classifier.train_config

    def recording(self):
        seen.update(self.get_params())
        return original(self)

    def reached(*args, **kwargs):
        raise _Reached

    monkeypatch.setattr(Classifier, "train_config", recording)
    monkeypatch.setattr(caviar.prepared, "prepare_data", reached)
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> tuple[Any, dict[str, Any]]:
        seen.clear()
        return CliRunner().invoke(app, ["train", "iris", *args]), dict(seen)

    return run


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def cli_text(p: HParam, value: Any) -> list[str]:
    """``value`` as `caviar train` arguments."""
    if p.kind == "bool":
        return [flag(p.name) if value else "--no-" + flag(p.name)[2:]]
    if p.kind == "widths":
        return [flag(p.name), ",".join(map(str, value)) or "none"]
    return [flag(p.name), repr(value) if isinstance(value, float) else str(value)]


def test_train_options_are_the_registered_fields() -> None:
    from typer.main import get_command

    from caviar.cli import app

    command = get_command(app).commands["train"]  # type: ignore[attr-defined]
    options = {param.name: param for param in command.params}
    fixed = {"dataset", "file", "label", "task", "data_dir", "val_fraction", "test_fraction", "seed", "dtype", "save"}
    assert set(options) - fixed == {p.name for p in FIELDS}
    for p in FIELDS:
        opt = options[p.name]
        if p.kind == "bool":
            assert opt.opts == [flag(p.name)] and opt.secondary_opts == ["--no-" + flag(p.name)[2:]]
        else:
            assert opt.opts == [flag(p.name), *map(flag, p.aliases)], p.name
        assert opt.default == (",".join(map(str, p.default)) if p.kind == "widths" else p.default), p.name


@pytest.mark.parametrize("p", CONFIG_FIELDS)
def test_train_accepts_exactly_the_registered_values(p: HParam, train_cli) -> None:
    base = ["--no-batchnorm"] if p.name == "batch_size" else []
    for value in inside(p):
        result, params = train_cli(*base, *cli_text(p, value))
        assert isinstance(result.exception, _Reached), (value, result.output)
        assert params[p.name] == value
    for value in outside(p):
        if p.kind == "bool" or (numeric(p) and (isinstance(value, bool) or not is_integral(p, value))):
            continue  # not typeable for that option: the option's own parser refuses it (below)
        result, _ = train_cli(*base, *cli_text(p, value))
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1, (value, result.output)
        assert lines[0].startswith(f"error: {flag(p.name)}: "), lines[0]
    if numeric(p):
        result, _ = train_cli(flag(p.name), "true")  # a boolean is no number here either
        assert result.exit_code == 2 and "Invalid value" in result.output


def is_integral(p: HParam, value: Any) -> bool:
    """Whether ``value`` can be typed for ``p``'s option at all (an int option takes only integers)."""
    return p.kind != "int" or float(value).is_integer()


# ------------------------------------------------------------------------------------------ panda
TOKEN = "hparams-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def panda(tmp_path_factory):
    """One panda session (never stepped: controls apply at once) and a client of its server."""
    from fastapi.testclient import TestClient

    from caviar.panda.server import create_app
    from caviar.panda.session import PandaSession

    folder = tmp_path_factory.mktemp("panda")
    spec = {
        "study": {"name": "hparams", "seed": 0},
        "data": {"dataset": "iris"},
        "model": {"hidden": [4]},
        "training": {"batch_size": 32, "epochs": 2},
        "search": {"storage": f"sqlite:///{folder / 'panda.db'}"},
    }
    session = PandaSession(spec)
    client = TestClient(create_app(session, TOKEN))
    yield session, client
    client.close()
    session.close(10)


def post_set(client, name: str, value: Any):
    if isinstance(value, float) and math.isinf(value):
        body = f'{{"{name}": 1e400}}'.encode()
        return client.post("/api/set", content=body, headers={**AUTH, "Content-Type": "application/json"})
    return client.post("/api/set", json={name: value}, headers=AUTH)


@pytest.mark.parametrize("p", CONFIG_FIELDS)
def test_panda_changes_exactly_the_live_fields_within_their_bounds(p: HParam, panda) -> None:
    from caviar.errors import ControlError

    session, client = panda
    if not p.live:
        with pytest.raises(ControlError, match=f"unknown hyperparameter '{p.name}'"):
            session.set_hyperparameters({p.name: p.default})
        r = post_set(client, p.name, p.default)
        assert r.status_code == 422 and f"unknown hyperparameter '{p.name}'" in r.json()["error"]
        return
    for value in inside(p):
        session.set_hyperparameters({p.name: value}).wait()
        assert session.hp[p.name] == value
        r = post_set(client, p.name, p.default)
        assert r.status_code == 200, r.text
        assert session.hp[p.name] == p.default
    for value in outside(p):
        with pytest.raises(ControlError) as info:
            session.set_hyperparameters({p.name: value})
        assert one_line(info.value).startswith(f"{p.name}: ")
        r = post_set(client, p.name, value)
        assert r.status_code == 422 and "\n" not in r.json()["error"], (value, r.text)
        assert r.json()["error"].startswith(p.name), r.json()["error"]
        assert session.hp[p.name] == p.default


def test_the_page_reads_its_controls_from_the_registry(panda) -> None:
    _, client = panda
    served = client.get("/api/hparams").json()["live"]
    assert [c["name"] for c in served] == list(LIVE)
    for c in served:
        p = BY_NAME[c["name"]]
        assert (c["low"], c["high"], c["low_open"], c["high_open"]) == (
            p.bounds.low,
            p.bounds.high,
            p.bounds.low_open,
            p.bounds.high_open,
        )
        assert c["aliases"] == list(p.aliases) and c["allowed"] == p.allowed and c["default"] == p.default
    js = client.get("/static/panda.js").text
    assert "/api/hparams" in js
    assert not [name for name in LIVE if f'"{name}"' in js]  # no list of its own


@pytest.mark.parametrize(("alias", "name"), ALIAS_CASES)
def test_alias_works_in_train_and_in_panda(alias: str, name: str, panda, train_cli) -> None:
    p = BY_NAME[name]
    value = p.default or 1e-4
    result, params = train_cli(flag(alias), repr(value * 2))
    assert isinstance(result.exception, _Reached) and params[name] == value * 2
    session, client = panda
    session.set_hyperparameters({alias: value / 2}).wait()
    assert session.hp[name] == value / 2
    assert client.post("/api/set", json={alias: value}, headers=AUTH).status_code == 200
    assert session.hp[name] == value
    r = client.post("/api/set", json={alias: value, name: value}, headers=AUTH)
    assert r.status_code == 422 and "same hyperparameter" in r.json()["error"]
    served = {c["name"]: c for c in client.get("/api/hparams").json()["live"]}
    assert alias in served[name]["aliases"]


def test_panda_keeps_the_rules_across_fields(tmp_path) -> None:
    """lr_decay is live; under exponential decay it stays below 1 in panda as in the spec."""
    from fastapi.testclient import TestClient

    from caviar.errors import ControlError
    from caviar.panda.server import create_app
    from caviar.panda.session import PandaSession

    spec = {
        "data": {"dataset": "iris"},
        "model": {"hidden": [4]},
        "training": {"decay": "exponential", "lr_decay": 0.1, "epochs": 2},
        "search": {"storage": f"sqlite:///{tmp_path / 'panda.db'}"},
    }
    session = PandaSession(spec)
    client = TestClient(create_app(session, TOKEN))
    try:
        with pytest.raises(ControlError) as info:
            session.set_hyperparameters(lr_decay=1.0)
        assert (
            one_line(info.value)
            == "lr_decay: 1.0 must be < 1 for exponential decay (it multiplies the rate by 1 - lr_decay)"
        )
        r = client.post("/api/set", json={"lr_decay": 1.5}, headers=AUTH)
        assert r.status_code == 400 and r.json()["error"].startswith("lr_decay: 1.5 must be < 1")
        session.set_hyperparameters(lr_decay=0.5).wait()
        assert session.hp["lr_decay"] == 0.5
    finally:
        client.close()
        session.close(10)
