"""Live control of an external objective's trial: the panda's protocol, served by a small server on the trial.

``trial.live()`` starts it: a local HTTP server (FastAPI + uvicorn in a daemon thread) with the
panda's endpoints and token rules: ``GET /api/hparams`` (the trial's own names, from which the panda
page builds its boxes), ``/api/state``, ``/api/curves``, ``/api/stream`` and the panda page are open;
``POST /api/set``, ``/api/pause``, ``/api/resume``, ``/api/stop`` need the token
(``Authorization: Bearer T`` or ``X-Caviar-Token: T``; missing -> 401, wrong -> 403; every refusal a
JSON ``{"error": "one line"}``). It writes ``.caviar-panda.json`` like ``caviar panda``, so
``caviar ctl status | pause | resume | set lr=0.01 | stop`` works beside it.

Controls land between epochs: in ``trial.report(epoch)``, a change applies from epoch + 1 (what
``trial.hyperparameters`` gives the objective next), a pause holds the objective there until resumed,
a stop makes ``trial.should_stop()`` true. Each applied control is an event of the trial in storage
(kind, payload, step = the first epoch under it), drawn as a marker on the curves by the panda page.
"""

from __future__ import annotations

import math
import os
import secrets
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from caviar.errors import CaviarError, ControlError
from caviar.panda.commands import STATE_FILE, remove_state_file, write_state_file
from caviar.storage import Storage
from caviar.tune.space import ChoiceParam, IntParam, did_you_mean

#: The panda's short names, accepted when the trial has the long one (``caviar ctl set lr=...``).
ALIASES = {"lr": "learning_rate", "learning_rate": "lr", "eps": "epsilon", "weight_decay": "l2"}
RUNNING, PAUSED, STOPPED, FINISHED = "running", "paused", "stopped", "finished"


class SteeredTrial(Protocol):
    """What live control needs of a trial (:class:`caviar.tune.trial.Trial` is one): who it is, its
    reported rows and current values, and the two ways a control changes it."""

    storage: Storage
    study_name: str
    rows: list[dict[str, Any]]

    @property
    def number(self) -> int: ...

    @property
    def id(self) -> int: ...

    @property
    def study_id(self) -> int: ...

    @property
    def epoch(self) -> int | None: ...

    @property
    def hyperparameters(self) -> dict[str, Any]: ...

    def _set_hp(self, changes: Mapping[str, Any]) -> dict[str, Any]: ...

    def _request_stop(self, reason: str) -> None: ...


class _Pending:
    """A control waiting for the objective's next epoch; the HTTP thread waits on it."""

    def __init__(self, kind: str, payload: dict[str, Any]) -> None:
        self.kind, self.payload = kind, payload
        self.done = threading.Event()
        self.result: dict[str, Any] = {}
        self.error: ControlError | None = None

    def wait(self, timeout: float) -> dict[str, Any]:
        if not self.done.wait(timeout):
            raise ControlError(f"{self.kind}: not applied within {timeout:g}s (the objective reports no epoch)")
        if self.error is not None:
            raise self.error
        return self.result


class LiveControl:
    """The server attached to one trial, and the controls it queues for the trial's next epoch."""

    def __init__(
        self,
        trial: SteeredTrial,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        token: str | None = None,
        paused: bool = False,
        state_file: bool = True,
    ) -> None:
        from caviar.panda.protocol import bind_socket, make_server, url_of

        self.trial = trial
        self.token = token or secrets.token_urlsafe(24)
        self.status = PAUSED if paused else RUNNING
        self.events: list[dict[str, Any]] = []
        self.version = 0
        self.generation = 0  # the panda protocol's: a live trial's curves never restart
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._sock = bind_socket(host, port)
        self.url = url_of(self._sock)
        loopback = {"127.0.0.1", "localhost", "::1"}
        app = create_live_app(self, self.token, allowed_hosts=sorted(loopback) if host in loopback else None)
        self._server = make_server(app)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True, name="caviar-live"
        )
        self._thread.start()
        self._state_path: Path | None = None
        if state_file:
            self._state_path = Path(os.environ.get("CAVIAR_PANDA_FILE") or Path.cwd() / STATE_FILE)
            write_state_file(self._state_path, self._state_info())
        self._log("live", {"url": self.url, "hp": trial.hyperparameters}, step=None)

    # ---- reading
    def _state_info(self) -> dict[str, Any]:
        t = self.trial
        return {
            "url": self.url,
            "token": self.token,
            "pid": os.getpid(),
            "study": t.study_name,
            "trial": t.number,
            "storage": t.storage.url,
        }

    def state(self) -> dict[str, Any]:
        """What ``/api/state`` answers: the panda's fields, for this trial."""
        t = self.trial
        hp = t.hyperparameters
        with self._cond:
            epoch = t.epoch
            return _clean(
                {
                    "status": self.status,
                    "step": 0 if epoch is None else epoch + 1,
                    "epoch": 0 if epoch is None else epoch + 1,
                    "epochs": None,
                    "generation": 0,
                    "version": self.version,
                    "hp": hp,
                    "lr": _first_number(hp, ("lr", "learning_rate")),
                    "study": t.study_name,
                    "study_id": t.study_id,
                    "trial": t.number,
                    "trial_id": t.id,
                    "storage": t.storage.url,
                    "checkpoints": [],
                    "events": list(self.events),
                    "forks": [],
                    "error": None,
                }
            )

    def brief(self) -> dict[str, Any]:
        """The state a control's reply carries."""
        state = self.state()
        return {k: state[k] for k in ("status", "step", "epoch", "hp")}

    def controls(self) -> list[dict[str, Any]]:
        """What ``/api/hparams`` answers (the page builds its boxes from it): the trial's own hyperparameters."""
        space = _space_of(self.trial)
        out = []
        for name, value in self.trial.hyperparameters.items():
            p = space.get(name)
            if isinstance(p, ChoiceParam):
                kind, allowed, low, high = "choice", "one of " + ", ".join(map(str, p.choices)), None, None
            elif p is not None:
                kind, low, high = ("int" if isinstance(p, IntParam) else "float"), p.low, p.high
                allowed = f"searched on a {p.scale} scale in [{low:g}, {high:g}]"
            else:
                kind, allowed, low, high = type(value).__name__, "any number", None, None
            out.append(
                {
                    "name": name,
                    "kind": kind,
                    "default": _clean(value),
                    "help": f"the objective's {name}",
                    "aliases": [],
                    "choices": list(p.choices) if isinstance(p, ChoiceParam) else [],
                    "low": low,
                    "high": high,
                    "low_open": False,
                    "high_open": False,
                    "allowed": allowed,
                }
            )
        return out

    def curves(self, since: int | None = None) -> dict[str, Any]:
        """What ``/api/curves`` answers: the reported epochs (x = ``step``: the epoch number + 1)."""
        rows = [{**r, "step": r["epoch"] + 1} for r in self.trial.rows]
        step = rows[-1]["step"] if rows else 0
        return _clean({"generation": 0, "step": step, "steps": [], "epochs": rows})

    # ---- controls (from the HTTP thread)
    def submit(self, kind: str, payload: Mapping[str, Any] | None = None) -> _Pending:
        """Queue a control for the next epoch; bad input raises ControlError at once."""
        payload = dict(payload or {})
        if self.status in (STOPPED, FINISHED):
            raise ControlError(f"{kind}: the trial has {self.status}")
        if kind == "set":
            payload = {"changes": self.validate(payload.get("changes", {}))}
        elif kind not in ("pause", "resume", "stop"):
            raise ControlError(f"unknown control '{kind}'; one of set, pause, resume, stop")
        pending = _Pending(kind, payload)
        with self._cond:
            if kind == "pause" and self.status == PAUSED:
                pending.result = {"step": self.state()["step"], "kind": kind}
                pending.done.set()
                return pending
            self._pending.append(pending)
            self._cond.notify_all()
        return pending

    def validate(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``{name: value}`` against the trial's hyperparameters and the space's kinds; canonical names."""
        if not changes:
            raise ControlError("nothing to set: give at least one name=value")
        hp = self.trial.hyperparameters
        space = _space_of(self.trial)
        out: dict[str, Any] = {}
        for raw_name, value in changes.items():
            name = str(raw_name)
            if name not in hp and ALIASES.get(name) in hp:
                name = ALIASES[name]
            if name not in hp:
                raise ControlError(
                    f"unknown hyperparameter '{raw_name}'{did_you_mean(name, hp)}; this trial has {', '.join(hp)}"
                )
            param = space.get(name)
            if isinstance(param, ChoiceParam):
                param.index(value)  # a value that is not a choice raises, naming the choices
                out[name] = value
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                raise ControlError(f"{name}: {value!r} is not a finite number")
            if isinstance(param, IntParam) or (param is None and isinstance(hp[name], int)):
                if float(value) != int(value):
                    raise ControlError(f"{name}: {value!r} is not an integer")
                value = int(value)
            out[name] = value
        return out

    # ---- in the objective's thread, at each reported epoch
    def at_epoch(self, trial: SteeredTrial, epoch: int) -> None:
        """Apply the queued controls (from epoch + 1); hold here while paused."""
        with self._cond:
            self.version += 1
            while True:
                for pending in self._take():
                    self._apply(trial, pending, epoch + 1)
                if self.status != PAUSED:
                    return
                self._cond.wait(0.5)

    def _take(self) -> list[_Pending]:
        pending, self._pending = self._pending, []
        return pending

    def _apply(self, trial: SteeredTrial, pending: _Pending, step: int) -> None:
        kind, payload = pending.kind, pending.payload
        if kind == "set":
            old = trial._set_hp(payload["changes"])
            payload = {"changes": payload["changes"], "old": old}
        elif kind == "pause":
            self.status = PAUSED
        elif kind == "resume":
            self.status = RUNNING
        elif kind == "stop":
            self.status = STOPPED
            trial._request_stop("stopped")
        event = self._log(kind, payload, step)
        pending.result = {"step": step, "kind": kind, "payload": payload, "event": event["id"]}
        pending.done.set()

    def _log(self, kind: str, payload: Any, step: int | None) -> dict[str, Any]:
        t = self.trial
        event_id = t.storage.add_event(t.study_id, kind, payload, trial_id=t.id, step=step)
        event = {"id": event_id, "kind": kind, "payload": payload, "step": step, "undone": False}
        self.events.append(event)
        self.version += 1
        return event

    def close(self) -> None:
        """End the server; queued controls fail with 'the trial has finished'."""
        with self._cond:
            if self.status != STOPPED:
                self.status = FINISHED
            for pending in self._take():
                pending.error = ControlError(f"{pending.kind}: the trial has finished")
                pending.done.set()
            self._cond.notify_all()
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._sock.close()
        if self._state_path is not None:
            remove_state_file(self._state_path, self.url)


def _space_of(trial: SteeredTrial) -> dict[str, Any]:
    from caviar.tune.objective_spec import is_objective_spec, load_objective_spec

    raw = trial.storage.get_study(trial.study_id).spec
    return dict(load_objective_spec(raw).space.params) if is_objective_spec(raw) else {}


def _first_number(hp: Mapping[str, Any], names: tuple[str, ...]) -> float | None:
    for name in names:
        if isinstance(hp.get(name), (int, float)) and not isinstance(hp.get(name), bool):
            return float(hp[name])
    return None


def _clean(value: Any) -> Any:
    """JSON-able: non-finite floats become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------ the app
def create_live_app(live: LiveControl, token: str, allowed_hosts: list[str] | None = None) -> Any:
    """The FastAPI app of one live trial: the panda protocol (page, state, curves, stream, pause, resume,
    stop), and the trial's own ``/api/hparams`` and ``/api/set``; checkpoints, rollback and fork are refused."""
    from caviar.panda.protocol import Refused, new_app, protocol_router, run_control

    app = new_app("caviar live trial", allowed_hosts)
    router, auth = protocol_router(live, token)
    app.include_router(router)

    @app.get("/api/hparams")
    def live_hparams() -> dict[str, Any]:
        return {"live": live.controls(), "forkable": []}

    @app.post("/api/set", dependencies=auth)
    async def set_(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise Refused(422, "the body must be a JSON object of name: value") from None
        if not isinstance(body, dict):
            raise Refused(422, "the body must be a JSON object of name: value")
        try:
            changes = live.validate(body)
        except CaviarError as exc:  # an unknown name, or a value that is not one of a choice's choices
            raise Refused(422, str(exc)) from None
        return await run_in_threadpool(run_control, live, "set", {"changes": changes}, live.brief)

    def refuse(kind: str) -> Any:
        def handler() -> dict[str, Any]:
            raise Refused(400, f"{kind}: a live trial of an external objective has none (its model is yours)")

        return handler

    for kind in ("checkpoint", "rollback", "fork"):
        app.post(f"/api/{kind}", dependencies=auth)(refuse(kind))
    return app
