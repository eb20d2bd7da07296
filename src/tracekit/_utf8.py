"""Text that UTF-8 can hold: a lone surrogate (JSON's ``"\\ud800"`` in a request body, a name
decoded with ``surrogateescape``, an application's own string) becomes U+FFFD.

Python strings may hold one; UTF-8, and so SQLite's text and OTLP's protobuf, cannot. The store
keeps such text with U+FFFD, and the exporters send it so: protobuf refused the whole batch that
held one record with it.

``escaped`` is text for a log line or a terminal: what either would act on in it (a line break,
an escape sequence, a bell) is written out as its Python escape. ``without_terminal_sequences``
takes out the sequences a logger or a server writes into a message (colours and the like), where
blanking only their escape character would leave ``[31m`` in the line.
"""

from __future__ import annotations

import re

# a terminal control sequence (ECMA-48): a CSI (colours, cursor moves, clearing the screen), an
# OSC up to its BEL or ST (a window title, the markers around an OSC 8 hyperlink's text) or a
# two-character escape (ESC ( B of ``tput sgr0``)
TERMINAL_SEQUENCE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[ -/]*[0-~])"
)


def clean_text(text: str) -> str:
    """``text`` with each lone surrogate as U+FFFD (``text`` itself when it has none)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def clean_value(value: object) -> object:
    """``value`` with ``clean_text`` applied to every string in it (dict keys too)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list | tuple):
        return [clean_value(item) for item in value]
    if isinstance(value, dict):
        return {clean_value(k): clean_value(v) for k, v in value.items()}
    return value


def escaped(text: str) -> str:
    """``text`` with each character that is not printable as its Python escape (``\\x1b``)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def escaped_line(text: object, limit: int) -> str:
    """``text`` on one line (its runs of whitespace one space), ``escaped``, at most ``limit``
    characters: a message quoted in a log line."""
    return escaped(" ".join(str(text).split()))[:limit]


def without_terminal_sequences(text: str) -> str:
    """``text`` without the terminal control sequences in it. A few passes, for a sequence that
    only removing another makes (``ESC ESC[0m[31m``); an escape character left is for the
    caller's blanking of control characters."""
    for _ in range(3):
        if "\x1b" not in text:
            break
        text = TERMINAL_SEQUENCE.sub("", text)
    return text
