"""Helpers every benchmark may use: a fixed-width table for the terminal, a Markdown table,
replacing one ``## Section`` of docs/benchmarks.md without touching the other sections, and a
private folder for what a benchmark keeps between runs."""

from __future__ import annotations

import os
import platform
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
_DOC_HEADER = (
    "# Benchmarks\n\n"
    "Numbers measured by the scripts in `bench/` (run them all with `python -m bench`). Each\n"
    "section is rewritten by its own benchmark; compare numbers only within one section, since\n"
    "they come from one run on one machine.\n"
)


def private_cache(name: str) -> Path:
    """``name`` in ``$XDG_CACHE_HOME/tracekit-bench`` (``~/.cache/tracekit-bench``), a folder
    made 0700; exits when that folder is a symlink, another user's, or writable by others.

    What a benchmark keeps between runs (a built store, the bytecode its timed commands load)
    was under the shared temporary folder by a fixed name, which any user could create first:
    bytecode left there ran in the benchmark's commands, as whoever ran them.
    """
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    folder = Path(cache_home) / "tracekit-bench"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = folder.lstat()
    if (
        not stat.S_ISDIR(status.st_mode)
        or status.st_uid != os.getuid()
        or status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        raise SystemExit(f"{folder} must be a folder of this user's that no one else may write")
    return folder / name


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell: first column left-aligned, the others right."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first, *rest = (str(c) for c in cells)
        right = [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
        padded = [first.ljust(widths[0]), *right]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; numeric columns right-aligned."""
    align = ["---"] + ["---:"] * (len(header) - 1)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in cells) + " |" for cells in lines)


def machine() -> str:
    """One line naming the interpreter and machine the numbers came from."""
    import os

    return (
        f"Python {sys.version.split()[0]} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
    )


def replace_section(heading: str, body: str, path: Path = DOCS) -> None:
    """Write ``## heading`` with ``body`` into ``path``, replacing that section if present."""
    text = path.read_text(encoding="utf-8") if path.exists() else _DOC_HEADER
    marker = f"## {heading}\n"
    section = f"{marker}\n{body.strip()}\n"
    start = text.find(marker)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(marker))
        tail = "" if end < 0 else text[end:]
        text = text[:start] + section + tail
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
