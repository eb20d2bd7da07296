"""``tracekit canary`` views: the verdict, its reasons, and one table row per route and metric.

The text view is ASCII for pipes and logs; the rich view styles the same lines and table. Routes
come from spans and metric labels (untrusted): both views flatten them to one printable line.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tracekit.canary import ERROR_RATE, LATENCY, MetricResult, Verdict, exit_code
from tracekit.canary.explain import format_seconds
from tracekit_cli.options import one_line
from tracekit_cli.render.layout import format_time

if TYPE_CHECKING:
    from rich.console import Console

HEADERS = ("route", "metric", "class", "baseline -> canary", "effect (interval)", "adj. p")
STYLES = {"pass": "green", "marginal": "yellow", "fail": "bold red", "inconclusive": "magenta"}
MAX_ROUTE = 48


def header_lines(verdict: Verdict, *, strict: bool) -> list[str]:
    """Who was compared with whom, over what, and the verdict with its score and exit status."""
    subject = verdict.subject
    score = "-" if verdict.score is None else f"{verdict.score:.1f}"
    return [
        f"canary {one_line(subject.service, 80)}: {one_line(subject.canary_version, 60)}"
        f" against baseline {one_line(subject.baseline_version, 60)} ({subject.source})",
        f"window {_clock(subject.start_unix_nano)} to {_clock(subject.end_unix_nano)} UTC"
        f" ({_span(subject.end_unix_nano - subject.start_unix_nano)})",
        f"requests: baseline {verdict.baseline_requests:,}, canary {verdict.canary_requests:,}",
        f"verdict: {verdict.verdict.upper()} (score {score},"
        f" exit {exit_code(verdict.verdict, strict=strict)})",
    ]


def _clock(unix_nano: int) -> str:
    return format_time(unix_nano)[:19]


def _span(nanoseconds: int) -> str:
    seconds = nanoseconds / 1e9
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


def reason_lines(verdict: Verdict) -> list[str]:
    """The reasons, the number of requests still missing, and the warnings."""
    lines = ["because:"] + [f"  - {one_line(reason, 2000)}" for reason in verdict.reasons]
    if verdict.more_requests is not None:
        lines.append(f"about {verdict.more_requests:,} more canary requests would decide it")
    lines += [f"warning: {one_line(warning, 500)}" for warning in verdict.warnings]
    return lines


def table_rows(verdict: Verdict) -> list[tuple[str, ...]]:
    """One row per route and metric, in the document's order."""
    rows: list[tuple[str, ...]] = []
    previous = None
    for result in verdict.metrics:
        route = one_line(result.check.key.route, MAX_ROUTE)
        shown = "" if route == previous else route
        previous = route
        critical = "*" if result.critical else ""
        rows.append((shown, result.check.metric + critical, result.classification,
                     _values(result, verdict), _effect(result), _p(result.adjusted_p)))  # fmt: skip
    return rows


def _values(result: MetricResult, verdict: Verdict) -> str:
    check = result.check
    if check.metric == ERROR_RATE:
        return f"{_rate(check.baseline.errors, check.baseline.requests)} ->" \
               f" {_rate(check.canary.errors, check.canary.requests)}"  # fmt: skip
    q = 0.5 if check.metric == LATENCY else verdict.settings.tail_quantile
    before, after = check.baseline.quantile(q), check.canary.quantile(q)
    return f"{format_seconds(before)} -> {format_seconds(after)}"


def _rate(errors: int, requests: int) -> str:
    return f"{errors / requests:.2%}" if requests else "-"


def _effect(result: MetricResult) -> str:
    check = result.check
    if check.estimate is None:
        return "-"
    if check.metric == ERROR_RATE:
        return f"{_points(check.estimate)}pp ({_points(check.lower)}..{_points(check.upper)})"
    return f"{_times(check.estimate)}x ({_times(check.lower)}..{_times(check.upper)})"


def _times(log_ratio: float | None) -> str:
    # three significant digits, zeros kept (1.50), but no bare point: 102 is not "102."
    return "?" if log_ratio is None else f"{math.exp(log_ratio):#.3g}".rstrip(".")


def _points(value: float | None) -> str:
    return "?" if value is None else f"{value * 100:+.2f}"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}"


def render_text(verdict: Verdict, width: int, *, strict: bool = False) -> str:
    """The whole view as ASCII text, every line at most ``width`` columns (reasons wrap)."""
    rows = [HEADERS, *table_rows(verdict)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    room = width - sum(widths[1:]) - 2 * (len(HEADERS) - 1)
    widths[0] = min(widths[0], max(12, room))
    rows = [(_fit(row[0], widths[0]), *row[1:]) for row in rows]
    table = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines = [*header_lines(verdict, strict=strict), ""]
    lines += [part for line in reason_lines(verdict) for part in _wrap(line, width)]
    lines += ["", *table, "", *_wrap(_legend(verdict), width)]
    return "\n".join(line[:width].rstrip() for line in lines) + "\n"


def _fit(text: str, room: int) -> str:
    return text if len(text) <= room else text[: room - 3] + "..."


def _legend(verdict: Verdict) -> str:
    q = verdict.settings.tail_quantile * 100
    return (
        f"latency: p50, tail_latency: p{q:g}; * critical; intervals"
        f" {verdict.settings.confidence:.0%}; adj. p: Holm-corrected, one-sided (canary worse)"
    )


def _wrap(line: str, width: int) -> list[str]:
    if len(line) <= width:
        return [line]
    return textwrap.wrap(line, width, subsequent_indent="      ")


def render_rich(console: Console, verdict: Verdict, *, strict: bool = False) -> None:
    """The same view on a terminal: the verdict and classes in colour, the rows as a table."""
    from rich.table import Table
    from rich.text import Text

    lines = header_lines(verdict, strict=strict)
    for line in lines[:-1]:
        console.print(Text(line))
    console.print(Text(lines[-1], style=STYLES[verdict.verdict]))
    for line in reason_lines(verdict):
        console.print(Text(line, style="yellow" if line.startswith("warning") else ""))
    console.print()
    table = Table(show_edge=False, header_style="bold")
    for name in HEADERS:
        table.add_column(Text(name), no_wrap=name != "route")
    for row in table_rows(verdict):
        cells: Sequence[Text] = [Text(cell) for cell in row]
        cells[2].stylize(STYLES[row[2]])
        table.add_row(*cells)
    console.print(table)
    console.print(Text(_legend(verdict), style="dim"))
