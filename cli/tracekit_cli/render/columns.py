"""Text measured in terminal columns, not characters: a character of Japanese or Chinese takes
two, so counted in characters a line of them runs past the terminal. ASCII takes the plain,
faster path."""

from __future__ import annotations

import re
import textwrap

_WORDS = re.compile(r"\s+|\S+")


def text_width(text: str) -> int:
    """How many terminal columns ``text`` takes."""
    if text.isascii():
        return len(text)
    from rich.cells import cell_len

    return cell_len(text)


def pad(text: str, width: int) -> str:
    """``text`` padded with spaces to ``width`` columns (``str.ljust`` counting columns)."""
    return text + " " * (width - text_width(text))


def wrap_text(
    text: str, width: int, indent: str = "", *, break_on_hyphens: bool = True
) -> list[str]:
    """``textwrap.wrap`` counting columns; continuation lines start with ``indent``. A word
    longer than a line (a message in Japanese has no spaces) is split over lines, never cut."""
    if text.isascii():
        return textwrap.wrap(
            text, width, subsequent_indent=indent, break_on_hyphens=break_on_hyphens
        )
    lines, line = [], ""
    for word in _WORDS.findall(text):
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
