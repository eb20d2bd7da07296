"""The ``tracekit`` command line: thin click commands over the tracekit library."""

from __future__ import annotations

import importlib.util
import sys

CLI_EXTRA = ("click", "rich")  # what `pip install 'tracekit[cli]'` adds


def main() -> None:
    """Entry point of the ``tracekit`` console script.

    A plain ``pip install tracekit`` has the library and this script but not the command's own
    dependencies: say how to get them (one line, exit 2) instead of failing on an import.
    """
    missing = [name for name in CLI_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        sys.stderr.write(
            f"tracekit: the tracekit command needs the cli extra ({', '.join(missing)} missing):"
            " pip install 'tracekit[cli]'\n"
        )
        sys.exit(2)
    try:
        from tracekit_cli.main import main as run
    except KeyboardInterrupt:  # Ctrl-C while the modules load, before click would catch it
        sys.stderr.write("tracekit: aborted\n")
        sys.exit(130)
    run()
