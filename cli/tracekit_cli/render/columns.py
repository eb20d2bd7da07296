"""Text measured in terminal columns, not characters: a character of Japanese or Chinese takes
two, so counted in characters a line of them runs past the terminal. ASCII takes the plain,
faster path."""

from __future__ import annotations

import re
import textwrap
from typing import Any

# A number and its unit ("+600.6 ms", "2.0 min", "22:13:20.000 UTC"), and a status and its
# protocol ("HTTP 500"), are one word when lines wrap: split over two lines, a figure reads as a
# bare number and "HTTP" as the end of a sentence.
_UNIT = r"(?:ms|s|min|h|d|y|UTC)\b"
_WORDS = re.compile(rf"\S*\d {_UNIT}\S*|\S*\bHTTP \d{{3}}\b\S*|\s+|\S+")
_UNIT_SPACE = re.compile(rf"(?<=\d) (?={_UNIT})|(?<=\bHTTP) (?=\d{{3}}\b)")
_NO_BREAK = "\xa0"  # textwrap breaks at ASCII whitespace only


def text_width(text: str) -> int:
    """How many terminal columns ``text`` takes."""
    if text.isascii():
        return len(text)
    from rich.cells import cell_len

    return cell_len(text)


def pad(text: str, width: int) -> str:
    """``text`` padded with spaces to ``width`` columns (``str.ljust`` counting columns)."""
    return text + " " * (width - text_width(text))


def words(text: str) -> list[str]:
    """``text`` as words and the spaces between them, a number and its unit one word, as is
    ``HTTP`` and its status."""
    return _WORDS.findall(text)


def wrap_keeping_units(text: str, width: int, **options: Any) -> list[str]:
    """``textwrap.wrap`` keeping each number on a line with its unit, and ``HTTP`` with its
    status (``text`` holds no no-break space of its own: ``one_line`` turns them into spaces)."""
    held = _UNIT_SPACE.sub(_NO_BREAK, text)
    return [line.replace(_NO_BREAK, " ") for line in textwrap.wrap(held, width, **options)]


def pack(items: list[str], width: int, sep: str = "   ", indent: str = "") -> list[str]:
    """``items`` joined by ``sep`` on as few lines of ``width`` columns as hold them, each item
    whole on one line (a legend's glyph stays beside what it means); lines after the first
    start with ``indent``."""
    lines: list[str] = []
    for item in items:
        if lines and text_width(lines[-1] + sep + item) <= width:
            lines[-1] += sep + item
        else:
            lines.append(indent + item if lines else item)
    return lines


def wrap_text(
    text: str, width: int, indent: str = "", *, break_on_hyphens: bool = True
) -> list[str]:
    """``textwrap.wrap`` counting columns; continuation lines start with ``indent``. A word
    longer than a line (a message in Japanese has no spaces) is split over lines, never cut."""
    if text.isascii():
        return wrap_keeping_units(
            text, width, subsequent_indent=indent, break_on_hyphens=break_on_hyphens
        )
    lines, line = [], ""
    for word in words(text):
        if text_width(line + word) <= width:
            line += word
            continue
        if line.strip():
            lines.append(line.rstrip())
            line = indent
        if word.isspace():
            continue  # the break itself
        for char in word:
            if text_width(line + char) > width and line.strip():
                lines.append(line)
                line = indent
            line += char
    return [*lines, line.rstrip()]
