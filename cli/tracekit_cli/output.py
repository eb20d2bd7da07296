"""Writing a result in the chosen format: the one place that picks rich, text or JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from tracekit_cli.options import no_color, terminal_width


def emit_json(document: Any) -> None:
    """Indented JSON on stdout (non-ASCII kept, control characters escaped by json)."""
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


def emit_text(render: Callable[[int], str]) -> None:
    """Plain text at the terminal width (or 100 columns when piped)."""
    sys.stdout.write(render(terminal_width()))


def emit_rich(draw: Callable[[Any], None]) -> None:
    """Rich tables on a console (``search``, ``services``); only for ``--format rich``."""
    from tracekit_cli.render.rich_view import make_console

    draw(make_console(terminal_width(), color=not no_color()))
