"""The panda's protocol over HTTP, for anything steered that way: a panda session, or a live trial of
the user's own objective (``trial.live()``). Both servers mount :func:`protocol_router` and add their
own ``/api/hparams`` and ``/api/set`` (panda also its checkpoints, rollback, fork and adopt).

Reading is open: the page and its scripts, ``/api/state``, ``/api/curves``, ``/api/stream``. Every
changing request (POST) needs the token, as ``Authorization: Bearer T`` or ``X-Caviar-Token: T``:
missing -> 401, wrong -> 403. Every refusal is a JSON ``{"error": "one line"}`` with a 4xx status.
A control is queued with the steered thing, which applies it at its next step or epoch; the request
waits for that (at most CONTROL_TIMEOUT_S).
"""

from __future__ import annotations

import asyncio
import errno
import json
import secrets
import socket
from collections.abc import Callable, Mapping
from functools import lru_cache
from importlib import resources
from typing import Any, Protocol

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from caviar.errors import CaviarError, ControlError

CONTROL_TIMEOUT_S = 30.0
STREAM_INTERVAL_S = 0.25
#: A refused control with one of these words is a conflict with the state (409), else a bad request (400).
CONFLICT_WORDS = ("stopped", "diverged", "finished")


class Waiting(Protocol):
    """A queued control: ``wait`` returns its result once applied, or raises ControlError."""

    def wait(self, timeout: float) -> dict[str, Any]: ...


class Steered(Protocol):
    """What the protocol steers: a picture of its state, its curves, and a queue of controls."""

    version: int  # bumped on every change the page shows
    generation: int  # bumped when the curves restart (a rollback)

    def state(self) -> dict[str, Any]: ...

    def curves(self, since: int | None = None) -> dict[str, Any]: ...

    def submit(self, kind: str, payload: Mapping[str, Any] | None = None) -> Waiting: ...


class Refused(Exception):
    """A request refused with ``status`` and a one-line ``message`` (the JSON body's ``error``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def new_app(title: str, allowed_hosts: list[str] | None = None) -> FastAPI:
    """A FastAPI app whose refusals are one-line JSON errors.

    ``allowed_hosts`` (the loopback names, for a server on loopback) refuses other Host headers, so
    a web page elsewhere cannot read the server through DNS rebinding.
    """
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.state.should_stop = lambda: False

    @app.exception_handler(Refused)
    async def _refused(_: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    return app


def token_guard(token: str) -> Callable[[Request], None]:
    """A FastAPI dependency: the request carries ``token`` (401 when it carries none, 403 when another)."""
    if not token:
        raise ControlError("the server needs a non-empty token")

    def require_token(request: Request) -> None:
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-caviar-token")
        if not given:
            raise Refused(
                401,
                "missing token: send 'Authorization: Bearer <token>' or 'X-Caviar-Token: <token>'",
                {"WWW-Authenticate": "Bearer"},
            )
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise Refused(403, "wrong token")

    return require_token


def refusal(exc: CaviarError) -> Refused:
    """A control that could not be applied: 409 when the state forbids it, else 400."""
    return Refused(409 if any(w in str(exc) for w in CONFLICT_WORDS) else 400, str(exc))


def run_control(
    target: Steered, kind: str, payload: Mapping[str, Any] | None, brief: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Queue a control, wait until it is applied; the reply ``{"ok", "result", "state": brief()}``."""
    try:
        result = target.submit(kind, payload).wait(CONTROL_TIMEOUT_S)
    except CaviarError as exc:
        raise refusal(exc) from None
    return {"ok": True, "result": result, "state": brief()}


def brief_of(target: Steered) -> Callable[[], dict[str, Any]]:
    """The state a control's reply carries: status, step, epoch and hyperparameters."""
    return lambda: {k: v for k, v in target.state().items() if k in ("status", "step", "epoch", "hp")}


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """plotly.js from the installed plotly package (no CDN)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def static_file(name: str) -> str:
    """A file of the panda page (panda/static)."""
    return resources.files("caviar.panda").joinpath("static", name).read_text(encoding="utf-8")


def protocol_router(
    target: Steered, token: str, brief: Callable[[], dict[str, Any]] | None = None
) -> tuple[APIRouter, list[Any]]:
    """The routes every steered thing has, and the token dependency for the server's own POSTs."""
    router = APIRouter()
    auth = [Depends(token_guard(token))]
    reply = brief or brief_of(target)

    def control(kind: str) -> Callable[[], dict[str, Any]]:
        def handler() -> dict[str, Any]:
            return run_control(target, kind, None, reply)

        return handler

    @router.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(static_file("panda.html"), headers={"Cache-Control": "no-store"})

    @router.get("/static/panda.js")
    def page_js() -> Response:
        return Response(static_file("panda.js"), media_type="text/javascript")

    @router.get("/static/plotly.min.js")
    def plotly() -> Response:
        return Response(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    @router.get("/api/state")
    def state() -> dict[str, Any]:
        return target.state()

    @router.get("/api/curves")
    def curves(since: int | None = None) -> dict[str, Any]:
        return target.curves(since)

    @router.get("/api/stream")
    async def stream(request: Request, since: int | None = None, max_events: int | None = None) -> StreamingResponse:
        should_stop = request.app.state.should_stop

        async def events():
            sent, generation, last_step = -1, None, since
            n = 0
            while not should_stop():
                if target.version != sent:
                    sent = target.version
                    reset = generation is not None and generation != target.generation
                    data = await run_in_threadpool(target.curves, None if reset else last_step)
                    st = await run_in_threadpool(target.state)
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

    for kind in ("pause", "resume", "stop"):
        router.post(f"/api/{kind}", dependencies=auth, name=kind)(control(kind))
    return router, auth


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
    """The http:// address a bound socket answers at."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
