"""PostgreSQL for the tests: the server started by .ci/postgres.sh, and a fresh schema per test.

The server's URL comes from ``CAVIAR_TEST_POSTGRES_URL``; when it is not set, the script is run
(it is idempotent) and the default URL is used. If no server can be had the test fails, never skips.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

ENV = "CAVIAR_TEST_POSTGRES_URL"
DEFAULT_URL = "postgresql+psycopg2://postgres@127.0.0.1:55432/caviar_test"
SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "postgres.sh"


@functools.cache
def _start_server() -> str:
    """Run .ci/postgres.sh once per session; return '' on success, else why it failed."""
    try:
        proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    return "" if proc.returncode == 0 else (proc.stderr.strip() or proc.stdout.strip())[-800:]


def server_url() -> str:
    """The test server's URL, starting the server if the environment names none."""
    url = os.environ.get(ENV)
    if url:
        return url
    why = _start_server()
    if why:
        pytest.fail(f"{ENV} is not set and {SCRIPT} could not start PostgreSQL: {why}", pytrace=False)
    return DEFAULT_URL


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A URL whose connections see only a new, empty schema (dropped afterwards)."""
    name = f"caviar_t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    except sa.exc.OperationalError as err:
        engine.dispose()
        pytest.fail(f"PostgreSQL at {make_url(url)!r} does not answer: {err.orig}", pytrace=False)
    try:
        scoped = make_url(url).update_query_dict({"options": f"-csearch_path={name}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        engine.dispose()
