"""The ``tracekit diff`` view of two sets of requests: nodes ranked by their contribution to the
change in mean duration, each with the tests that found a change (or could not tell)."""

from __future__ import annotations

from tracekit.diff import FailOn, SetDiff, SetNode, SetSide
from tracekit.diff.set_tests import TOO_FEW, Test
from tracekit.diff.words import duration, signed
from tracekit_cli.options import one_line
from tracekit_cli.render.diff_view import (
    MARKERS,
    ROW_STYLES,
    Document,
    Glyphs,
    attribution_section,
    changes_section,
    footer,
    headline,
)

MAX_ROWS = 40  # nodes drawn in a terminal view; JSON lists all
WORDS = {
    "frequency": "in requests",
    "calls": "calls per request",
    "retries": "retries per request",
    "error_rate": "failed in",
    "self": "mean self time",
    "critical": "mean critical-path time",
}


def set_document(diff: SetDiff, glyphs: Glyphs, fail_on: FailOn) -> Document:
    """The whole view of a set comparison."""
    document = Document(glyphs, [])
    for name, side in (("A", diff.a), ("B", diff.b)):
        untimed = f" ({side.untimed} untimed)" if side.untimed else ""
        document.note((f"{name} ", "bold"), (one_line(side.label, 120), "bold"),
                      (f"  {side.requests} request{'s' if side.requests != 1 else ''}{untimed}, "
                       f"{_timing(side)}", "dim"))  # fmt: skip
    headline(document, diff.headline, diff.changes)
    document.row(("", ""))
    document.note(("  contribution  node (ranked by contribution to the change in mean duration)",
                   "bold"))  # fmt: skip
    timed = diff.a.timed and diff.b.timed
    for found in diff.nodes[:MAX_ROWS]:
        style = ROW_STYLES[found.status]
        contribution = signed(found.contribution_ns) if timed else "-"
        document.tree_row((f"{MARKERS[found.status]} ", f"bold {style or 'yellow'}"),
                     (f"{contribution:>12}  ", style),
                     (document.label(found.node), style))  # fmt: skip
        for text, note_style in _notes(found, diff.settings.min_requests):
            document.note((" " * 18, ""), (document.text(text), note_style))
    if len(diff.nodes) > MAX_ROWS:
        hidden = len(diff.nodes) - MAX_ROWS
        document.note((f"  ... {hidden} more nodes (--format json lists them all)", "dim"))
    changes_section(document, diff.changes)
    attribution_section(document, diff.attribution, {n.node.id: n.node for n in diff.nodes},
                        diff.b.mean_ns - diff.a.mean_ns, "mean", diff.gap)  # fmt: skip
    too_few = diff.duration_test.verdict == TOO_FEW  # a set below --min-requests
    footer(document, diff.warnings, diff.changes, fail_on,
           too_few_below=diff.settings.min_requests if too_few else None)  # fmt: skip
    return document


def _timing(side: SetSide) -> str:
    """Its mean and median; for a set none of whose requests was timed, not 0 ms."""
    if not side.timed:
        return "not timed"
    return f"mean {duration(side.mean_ns)}, median {duration(side.median_ns)}"


def _notes(found: SetNode, needed: int) -> list[tuple[str, str]]:
    out = []
    for test in found.tests:
        if test.verdict == "changed":
            out.append((f"{WORDS[test.metric]} {_value(test, test.a)} -> "
                        f"{_value(test, test.b)}{_delta(test)} (p={test.p_adjusted or 0.0:.2g})",
                        "yellow"))  # fmt: skip
    if found.status == TOO_FEW:
        reached = (found.a.requests if found.a else 0, found.b.requests if found.b else 0)
        out.append((f"too few to tell: {reached[0]} and {reached[1]} requests reach it"
                    f"{_timed_of(found, reached)} ({needed} needed in each set)",
                    "magenta"))  # fmt: skip
    return out


def _timed_of(found: SetNode, reached: tuple[int, int]) -> str:
    """How many of the requests reaching the node were timed, where some were not: a time
    is tested over those alone."""
    timed = (len(found.a.self_ns) if found.a else 0, len(found.b.self_ns) if found.b else 0)
    return "" if timed == reached else f", {timed[0]} and {timed[1]} of them timed"


def _value(test: Test, value: float | None) -> str:
    if value is None:
        return "-"
    if test.metric in ("frequency", "error_rate"):
        return f"{value:.0%}" if test.metric == "frequency" else f"{value:.1%}"
    return f"{value:.2f}" if test.metric in ("calls", "retries") else duration(value)


def _delta(test: Test) -> str:
    if test.metric in ("self", "critical") and test.a is not None and test.b is not None:
        return f" ({signed(test.b - test.a)})"
    return ""
