"""The demo's last word: what made its slowest checkout slower than its fastest (``tracekit diff``).

Only checkouts that did not fail are compared: a failed one is short because it stopped, which
says nothing about where time goes.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Any

from tracekit.diff import FailOn, compare_paths
from tracekit.path import Path
from tracekit_cli.render.diff_view import UNICODE, pair_document, to_rich


def fastest_and_slowest(paths: list[Path]) -> tuple[Path, Path] | None:
    """The fastest and the slowest of the paths without errors (None when fewer than two)."""
    whole = [p for p in paths if not p.errors]
    if len(whole) < 2:
        return None
    ranked = sorted(whole, key=lambda p: (p.duration_ms, p.query))
    return ranked[0], ranked[-1]


def show_diff(console: Any, paths: list[Path], store_path: FilePath) -> None:
    """Print ``tracekit diff FASTEST SLOWEST`` on the demo's console, under a rule."""
    from tracekit_cli.demo.typed import command_as_typed, store_flag

    pair = fastest_and_slowest(paths)
    if pair is None:
        return
    fastest, slowest = pair
    store = store_flag(store_path)
    console.rule("fastest against slowest checkout")
    tracekit = command_as_typed()
    console.print(f"$ {tracekit} diff {fastest.query} {slowest.query}{store}", markup=False,
                  soft_wrap=True)  # fmt: skip
    color = console.color_system is not None and not console.no_color
    document = pair_document(compare_paths(fastest, slowest), UNICODE, FailOn())
    console.file.write(to_rich(document, console.width, color=color))
