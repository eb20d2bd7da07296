"""Fenced code blocks of the documentation, each with the ``doc-test`` marker before it.

Every block in README.md and docs/ carries an HTML comment on the line before its fence that says
how the documentation test treats it (invisible when the Markdown is rendered):

- ``<!-- doc-test: run -->``: a complete Python program; it must exit 0.
- ``<!-- doc-test: file NAME -->``: saved as NAME in the document's folder for later blocks.
- ``<!-- doc-test: app asgi|wsgi [PATH STATUS] -->``: a program defining ``app``; served, then
  ``GET PATH`` must answer STATUS (default: ``GET /`` echoes a correlation ID).
- ``<!-- doc-test: shell -->``: shell commands, run in order; each must succeed.
- ``<!-- doc-test: serve PORT -->``: shell commands whose last one is a server; it must listen on
  PORT, and runs until the document's blocks are done.
- ``<!-- doc-test: output -->``: ``$ command`` lines, each followed by exactly what it prints
  (a last line ``...`` means the output goes on).
- ``<!-- doc-test: fragment: REASON -->``: not run, and REASON says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("run", "file", "app", "shell", "serve", "output", "fragment")
_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_MARKER = re.compile(r"^\s*<!-- doc-test: (\w+)(?::? ?(.*?))? -->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block and what its marker asks for."""

    document: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    kind: str | None  # None: no marker (the test fails on it)
    argument: str

    @property
    def where(self) -> str:
        """``docs/x.md:12`` for messages."""
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def documents() -> list[Path]:
    """README.md and every Markdown file under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(document: Path) -> list[Block]:
    """The fenced blocks of ``document`` in order, indentation (list items) removed."""
    lines = document.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, language = opening.group(1), opening.group(2)
        end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
        body = [_dedent(line, indent) for line in lines[index + 1 : end]]
        kind, argument = _marker(lines, index)
        found.append(Block(document, index + 1, language, "\n".join(body) + "\n", kind, argument))
        index = end + 1
    return found


def _dedent(line: str, indent: str) -> str:
    return line[len(indent) :] if line.startswith(indent) else line


def _marker(lines: list[str], fence: int) -> tuple[str | None, str]:
    previous = next((lines[i] for i in range(fence - 1, -1, -1) if lines[i].strip()), "")
    match = _MARKER.match(previous)
    if not match:
        return None, ""
    return match.group(1), (match.group(2) or "").strip()
