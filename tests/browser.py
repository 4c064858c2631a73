"""Shared helpers for the browser tests: the system Chromium (never `playwright install`), a uvicorn
server in a thread, and a place for screenshots a person can look at."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"


def launch_chromium(playwright: Any) -> Any:
    """A headless Chromium browser from the system package, via Playwright's sync API."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def screenshot_path(name: str) -> Path:
    """artifacts/screenshots/NAME under the repo root (gitignored), folder created."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / name


@contextmanager
def serve(app: Any, host: str = "127.0.0.1", start_timeout_s: float = 30.0) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a daemon thread on a free port; yields its base URL.

    Readiness is the server's own ``started`` flag (polled), not a guessed sleep; on exit the server is
    asked to stop and the thread joined.
    """
    import uvicorn

    config = uvicorn.Config(app, host=host, port=0, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="uvicorn-test")
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server stopped before it started")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"the test server did not start in {start_timeout_s} s")
        time.sleep(0.01)  # polling the readiness flag
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
