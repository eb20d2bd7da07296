"""``python -m tracekit_cli``: the same as the ``tracekit`` command."""

from tracekit_cli import main

main()
