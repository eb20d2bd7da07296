"""How the demo's printed commands start, so that they paste as typed."""

from __future__ import annotations

import contextlib
import shlex
import shutil
import sys
from pathlib import Path


def command_as_typed() -> str:
    """``tracekit`` when PATH finds this installation's command, else its path (relative to here
    when below): after ``make demo`` it is ``.venv/bin/tracekit`` until the venv is activated."""
    script = Path(sys.executable).with_name("tracekit")
    found = shutil.which("tracekit")
    if not script.exists() or (found and Path(found).resolve() == script.resolve()):
        return "tracekit"
    try:
        return shlex.quote(str(script.relative_to(Path.cwd())))
    except ValueError:
        return shlex.quote(str(script))


def store_flag(store_path: Path) -> str:
    """`` --store PATH`` as a shell reads it back (spaces, brackets); nothing for the default."""
    from tracekit.store import default_store_path
    from tracekit.store._paths import NoStorePathError

    with contextlib.suppress(NoStorePathError):  # no home: the path given is not the default
        if store_path == default_store_path():
            return ""
    return f" --store {shlex.quote(str(store_path))}"
