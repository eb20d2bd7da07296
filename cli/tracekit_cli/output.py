"""Writing a result in the chosen format: the one place that picks rich, text or JSON."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import Any

import click

from tracekit.records import finite_json
from tracekit_cli.options import no_color, terminal_width

# json escapes C0 controls only; these a terminal may act on too (C1 such as CSI and OSC, DEL,
# bidirectional overrides, line separators). They can only stand inside JSON strings, where the
# \uXXXX form decodes to the same text.
_TERMINAL_ACTIVE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def emit_json(document: Any) -> None:
    """Indented JSON on stdout: non-ASCII kept, every character a terminal acts on escaped."""
    click.echo(json_for_terminal(document))


def json_for_terminal(document: Any) -> str:
    """``document`` as indented, standard JSON with no raw control, bidi or line-separator
    character; NaN and infinities (attribute values OTLP allows) as OTLP/JSON's strings."""
    try:
        text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError:  # a NaN or an infinity: from a backend, or a store that kept it bare
        text = json.dumps(finite_json(document), indent=2, ensure_ascii=False)
    return _TERMINAL_ACTIVE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def emit_text(render: Callable[[int], str]) -> None:
    """Plain text at the terminal width (or 100 columns when piped)."""
    sys.stdout.write(render(terminal_width()))


def emit_rich(draw: Callable[[Any], None]) -> None:
    """Rich tables on a console (``search``, ``services``); only for ``--format rich``."""
    from tracekit_cli.render.rich_view import make_console

    draw(make_console(terminal_width(), color=not no_color()))
