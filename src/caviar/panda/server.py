"""The panda's web server: the page, its state and curves, a live stream, and the controls (FastAPI).

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

import asyncio
import errno
import json
import secrets
import socket
from functools import lru_cache
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, create_model, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from caviar import hparams
from caviar.errors import ControlError
from caviar.panda.fork import FORKABLE, MAX_K
from caviar.panda.session import HYPERPARAMETERS, PandaSession, canonical_name

CONTROL_TIMEOUT_S = 30.0
STREAM_INTERVAL_S = 0.25


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


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """plotly.js from the installed plotly package (no CDN)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _static(name: str) -> str:
    return resources.files("caviar.panda").joinpath("static", name).read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------ the app
def create_app(session: PandaSession, token: str, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The FastAPI app serving one session; POSTs need ``token``.

    ``allowed_hosts`` (the CLI passes the loopback names) refuses other Host headers, so a web page
    elsewhere cannot read the session through DNS rebinding.
    """
    if not token:
        raise ControlError("the panda server needs a non-empty token")
    app = FastAPI(title="caviar panda", docs_url=None, redoc_url=None, openapi_url=None)
    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.state.session = session
    app.state.should_stop = lambda: False

    class _Refused(Exception):
        def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
            self.status, self.message, self.headers = status, message, headers

    @app.exception_handler(_Refused)
    async def _refused(_: Request, exc: _Refused) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        message = _one_line(errors[0]) if errors else "invalid request"
        return JSONResponse({"error": message}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    def require_token(request: Request) -> None:
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-caviar-token")
        if not given:
            raise _Refused(
                401,
                "missing token: send 'Authorization: Bearer <token>' or 'X-Caviar-Token: <token>'",
                {"WWW-Authenticate": "Bearer"},
            )
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise _Refused(403, "wrong token")

    def control(kind: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            result = session.submit(kind, payload).wait(CONTROL_TIMEOUT_S)
        except ControlError as exc:
            status = 409 if "stopped" in str(exc) or "diverged" in str(exc) or "finished" in str(exc) else 400
            raise _Refused(status, str(exc)) from None
        return {"ok": True, "result": result, "state": _brief(session)}

    auth = [Depends(require_token)]

    # ---- reading (open)
    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(_static("panda.html"), headers={"Cache-Control": "no-store"})

    @app.get("/static/panda.js")
    def page_js() -> Response:
        return Response(_static("panda.js"), media_type="text/javascript")

    @app.get("/static/plotly.min.js")
    def plotly() -> Response:
        return Response(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    @app.get("/api/hparams")
    def live_hparams() -> dict[str, Any]:
        """What the page's controls are: the live hyperparameters with their bounds, aliases and help."""
        return {"live": hparams.describe(hparams.BY_NAME[n] for n in hparams.LIVE), "forkable": list(FORKABLE)}

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        return session.state()

    @app.get("/api/curves")
    def curves(since: int | None = None) -> dict[str, Any]:
        return session.curves(since)

    @app.get("/api/stream")
    async def stream(request: Request, since: int | None = None, max_events: int | None = None) -> StreamingResponse:
        async def events():
            sent, generation, last_step = -1, None, since
            n = 0
            while not app.state.should_stop():
                if session.version != sent:
                    sent = session.version
                    reset = generation is not None and generation != session.generation
                    data = await run_in_threadpool(session.curves, None if reset else last_step)
                    st = await run_in_threadpool(session.state)
                    reset = reset or (generation is not None and generation != data["generation"])
                    generation = data["generation"]
                    if data["steps"]:
                        last_step = data["steps"][-1]["step"]
                    elif reset:
                        last_step = None
                    payload = {"reset": reset, "state": st, "steps": data["steps"], "epochs": data["epochs"]}
                    yield f"data: {json.dumps(payload)}\n\n"
                    n += 1
                    if max_events is not None and n >= max_events:
                        return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(STREAM_INTERVAL_S)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )

    # ---- controls (token)
    @app.post("/api/pause", dependencies=auth)
    def pause() -> dict[str, Any]:
        return control("pause")

    @app.post("/api/resume", dependencies=auth)
    def resume() -> dict[str, Any]:
        return control("resume")

    @app.post("/api/set", dependencies=auth)
    def set_(body: SetBody) -> dict[str, Any]:
        changes = body.changes()
        if not changes:
            raise _Refused(422, f"nothing to set: give at least one of {', '.join(HYPERPARAMETERS)}")
        return control("set", {"changes": changes})

    @app.post("/api/checkpoint", dependencies=auth)
    def checkpoint(body: CheckpointBody | None = None) -> dict[str, Any]:
        return control("checkpoint", {"label": body.label if body else ""})

    @app.post("/api/rollback", dependencies=auth)
    def rollback(body: RollbackBody) -> dict[str, Any]:
        known = [c["id"] for c in session.state()["checkpoints"]]
        if body.checkpoint not in known:
            raise _Refused(404, f"no checkpoint {body.checkpoint}; known: {', '.join(map(str, known)) or 'none'}")
        return control("rollback", {"checkpoint": body.checkpoint})

    @app.post("/api/stop", dependencies=auth)
    def stop() -> dict[str, Any]:
        return control("stop")

    @app.post("/api/adopt", dependencies=auth)
    def adopt(body: AdoptBody) -> dict[str, Any]:
        if not session.forks:
            raise _Refused(409, "adopt: no fork yet; fork first, then adopt one of its members")
        if body.fork is not None and body.fork > len(session.forks):
            raise _Refused(404, f"adopt: no fork {body.fork}; there are {len(session.forks)}")
        return control("adopt", {"member": body.member, "fork": body.fork})

    @app.post("/api/fork", dependencies=auth)
    def fork(body: ForkBody | None = None) -> dict[str, Any]:
        body = body or ForkBody.model_validate({})
        for name in body.params or ():
            if name not in FORKABLE:
                raise _Refused(422, f"params: cannot vary '{name}'; one of {', '.join(FORKABLE)}")
        try:
            c = session.fork(
                k=body.k, factor=body.factor, params=body.params, epochs=body.epochs, warm=body.warm, pause=body.pause
            )
            result = c.wait(CONTROL_TIMEOUT_S)
        except ControlError as exc:
            raise _Refused(409 if "stopped" in str(exc) or "diverged" in str(exc) else 400, str(exc)) from None
        return {"ok": True, "result": result, "state": _brief(session)}

    return app


def _brief(session: PandaSession) -> dict[str, Any]:
    return {"status": session.status, "step": session.step, "epoch": session.epoch, "hp": session.hp}


# ------------------------------------------------------------------------------------------ serving
def bind_socket(host: str = "127.0.0.1", port: int | None = None) -> socket.socket:
    """A listening socket on (host, port), or a free port; a port in use is a one-line ControlError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, int(port or 0)))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ControlError(
                f"port {port} on {host} is already in use; choose another with --port, "
                "or leave --port out for a free one"
            ) from None
        raise ControlError(f"cannot listen on {host}:{port or 0}: {exc.strerror or exc}") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def make_server(app: Any, log_level: str = "warning") -> Any:
    """A uvicorn server for ``app`` (run it with ``server.run(sockets=[sock])``); the stream ends on exit."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=2, lifespan="off")
    server = uvicorn.Server(config)
    app.state.should_stop = lambda: server.should_exit
    return server


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
