"""The panda's web server: the panda protocol (caviar.panda.protocol) and a session's own controls (FastAPI).

Imported only by the panda commands and tests (it loads FastAPI at import time).

Reading is open (GET: the page, ``/api/hparams``, ``/api/state``, ``/api/curves``, ``/api/stream``);
every changing request (POST) needs the session's token, as ``Authorization: Bearer T`` or
``X-Caviar-Token: T``: missing -> 401, wrong -> 403. Bodies are checked by pydantic models and then
by caviar's validation rules, both built from caviar.hparams (which also gives the page its
controls, through ``/api/hparams``); every refusal is a JSON ``{"error": "one line"}`` with a 4xx
status and leaves the training untouched. The server reads no file but the package's own page and
plotly.js.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, create_model, model_validator

from caviar import hparams
from caviar.errors import ControlError
from caviar.panda.fork import FORKABLE, MAX_K
from caviar.panda.protocol import (
    CONTROL_TIMEOUT_S,
    Refused,
    bind_socket,
    make_server,
    new_app,
    protocol_router,
    refusal,
    run_control,
    url_of,
)
from caviar.panda.session import HYPERPARAMETERS, PandaSession, canonical_name

#: Serving helpers live in caviar.panda.protocol; ``caviar panda`` and the tests take them from here too.
__all__ = ["bind_socket", "create_app", "make_server", "url_of"]


# ------------------------------------------------------------------------------------------ bodies
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


def _rate(**kw: Any) -> Any:
    return Field(None, allow_inf_nan=False, **kw)


class _SetBase(_Body):
    @model_validator(mode="before")
    @classmethod
    def _one_name_each(cls, data: Any) -> Any:
        """``lr`` and ``learning_rate`` in one body would silently keep one of them: refuse instead."""
        if isinstance(data, dict):
            seen: dict[str, str] = {}
            for key in data:
                name = hparams.canonical(str(key))
                if name in seen:
                    raise ValueError(f"'{seen[name]}' and '{key}' are the same hyperparameter; give one of them")
                seen[name] = str(key)
        return data

    def changes(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump(exclude_none=True).items()}


def _live_field(p: hparams.HParam) -> tuple[Any, Any]:
    """A live hyperparameter as an optional, finite, bounded float under its name or any alias."""
    names = AliasChoices(p.name, *p.aliases)
    return float | None, Field(
        None, allow_inf_nan=False, validation_alias=names, description=p.help, **p.bounds.limits()
    )


#: ``POST /api/set``: the hyperparameters panda may change (caviar.hparams.LIVE), by name or alias.
_LIVE_FIELDS: dict[str, Any] = {name: _live_field(hparams.BY_NAME[name]) for name in hparams.LIVE}
SetBody: Any = create_model("SetBody", __base__=_SetBase, **_LIVE_FIELDS)


class RollbackBody(_Body):
    """``POST /api/rollback``: the id of the checkpoint to go back to."""

    checkpoint: int = Field(ge=0)


class CheckpointBody(_Body):
    """``POST /api/checkpoint``: an optional label."""

    label: str = Field("", max_length=80)


class ForkBody(_Body):
    """``POST /api/fork``: how many variants, within which factor of the current values, for how long."""

    k: int = Field(8, ge=2, le=MAX_K)
    factor: float = Field(2.0, gt=1, allow_inf_nan=False)
    params: list[str] | None = None
    epochs: int | None = Field(None, ge=1)
    warm: bool = True
    pause: bool = True


class AdoptBody(_Body):
    """``POST /api/adopt``: the fork trial (its number) to go on from, of fork ``fork`` (1-based; default: latest)."""

    member: int = Field(ge=0)
    fork: int | None = Field(None, ge=1)


# ------------------------------------------------------------------------------------------ errors
def _one_line(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    where = ".".join(loc)
    if err.get("type") == "extra_forbidden":
        name = loc[-1] if loc else "?"
        try:
            canonical_name(name)
        except ControlError as exc:
            return str(exc)
        return f"'{name}' is not a field of this request"
    msg = str(err.get("msg", "invalid")).replace("Input should", "should").removeprefix("Value error, ")
    given = err.get("input")
    if err.get("type") == "missing":
        return f"{where}: is missing"
    return f"{where}: {given!r} {msg}" if where else f"{msg} (got {given!r})"


# ------------------------------------------------------------------------------------------ the app
def create_app(session: PandaSession, token: str, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The FastAPI app serving one session: the panda protocol (caviar.panda.protocol) and the
    session's own controls; POSTs need ``token``.

    ``allowed_hosts`` (the CLI passes the loopback names) refuses other Host headers, so a web page
    elsewhere cannot read the session through DNS rebinding.
    """
    if not token:
        raise ControlError("the panda server needs a non-empty token")
    app = new_app("caviar panda", allowed_hosts)
    app.state.session = session

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        message = _one_line(errors[0]) if errors else "invalid request"
        return JSONResponse({"error": message}, status_code=422)

    def brief() -> dict[str, Any]:
        return _brief(session)

    def control(kind: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        return run_control(session, kind, payload, brief)

    router, auth = protocol_router(session, token, brief)
    app.include_router(router)

    @app.get("/api/hparams")
    def live_hparams() -> dict[str, Any]:
        """What the page's controls are: the live hyperparameters with their bounds, aliases and help."""
        return {"live": hparams.describe(hparams.BY_NAME[n] for n in hparams.LIVE), "forkable": list(FORKABLE)}

    @app.post("/api/set", dependencies=auth)
    def set_(body: SetBody) -> dict[str, Any]:
        changes = body.changes()
        if not changes:
            raise Refused(422, f"nothing to set: give at least one of {', '.join(HYPERPARAMETERS)}")
        return control("set", {"changes": changes})

    @app.post("/api/checkpoint", dependencies=auth)
    def checkpoint(body: CheckpointBody | None = None) -> dict[str, Any]:
        return control("checkpoint", {"label": body.label if body else ""})

    @app.post("/api/rollback", dependencies=auth)
    def rollback(body: RollbackBody) -> dict[str, Any]:
        known = [c["id"] for c in session.state()["checkpoints"]]
        if body.checkpoint not in known:
            raise Refused(404, f"no checkpoint {body.checkpoint}; known: {', '.join(map(str, known)) or 'none'}")
        return control("rollback", {"checkpoint": body.checkpoint})

    @app.post("/api/adopt", dependencies=auth)
    def adopt(body: AdoptBody) -> dict[str, Any]:
        if not session.forks:
            raise Refused(409, "adopt: no fork yet; fork first, then adopt one of its members")
        if body.fork is not None and body.fork > len(session.forks):
            raise Refused(404, f"adopt: no fork {body.fork}; there are {len(session.forks)}")
        return control("adopt", {"member": body.member, "fork": body.fork})

    @app.post("/api/fork", dependencies=auth)
    def fork(body: ForkBody | None = None) -> dict[str, Any]:
        body = body or ForkBody.model_validate({})
        for name in body.params or ():
            if name not in FORKABLE:
                raise Refused(422, f"params: cannot vary '{name}'; one of {', '.join(FORKABLE)}")
        try:
            c = session.fork(
                k=body.k, factor=body.factor, params=body.params, epochs=body.epochs, warm=body.warm, pause=body.pause
            )
            result = c.wait(CONTROL_TIMEOUT_S)
        except ControlError as exc:
            raise refusal(exc) from None
        return {"ok": True, "result": result, "state": brief()}

    return app


def _brief(session: PandaSession) -> dict[str, Any]:
    return {"status": session.status, "step": session.step, "epoch": session.epoch, "hp": session.hp}
