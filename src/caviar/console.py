"""The command line's shared console helpers: where output goes, one-line errors, the default storage.

``caviar.cli`` and the commands that live beside their code (``caviar.panda.commands``,
``caviar.web.commands``) all import these from here, so that none of them imports another.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.text import Text

# Names, paths and error text are data: nothing printed is parsed as rich markup (styles go in Text).
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


def say_error(message: object, label: str = "error", style: str = "bold red") -> None:
    """Print ``label: message`` to stderr; the message is text, never rich markup (``[data]`` stays)."""
    err_console.print(Text.assemble((f"{label}:", style), " ", str(message)), highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line to stderr and exit non-zero."""
    say_error(message)
    raise typer.Exit(code)


def storage_url(storage: str | None) -> str:
    """``--storage`` as given, or the one ``.db`` file in the working directory (a one-line error if
    there is none or several)."""
    if storage is not None:
        return storage
    found = sorted(Path.cwd().glob("*.db"))
    if len(found) == 1:
        return str(found[0])
    if not found:
        fail("no study storage here: pass --storage URL_OR_FILE (caviar tune writes <spec>.db beside the spec)")
    fail(f"several .db files here ({', '.join(p.name for p in found)}): pass --storage")
