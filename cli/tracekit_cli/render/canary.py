"""``tracekit canary`` views: the verdict, its reasons, and one table row per route and metric.

The text view is ASCII for pipes and logs; the rich view styles the same lines and table. Routes
come from spans and metric labels (untrusted): both views flatten them to one printable line.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from tracekit.canary import ERROR_RATE, LATENCY, MetricResult, Verdict, exit_code
from tracekit.canary.explain import format_seconds
from tracekit_cli.options import one_line
from tracekit_cli.render.columns import pack, pad, text_width, wrap_text
from tracekit_cli.render.layout import format_time

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

HEADERS = ("route", "metric", "class", "baseline -> canary", "effect (interval)", "adj. p")
STYLES = {"pass": "green", "marginal": "yellow", "fail": "bold red", "inconclusive": "magenta"}
MAX_ROUTE = 48
ROUTE_FOLD = 16  # the rich table folds a route into no fewer columns than this


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
    """The whole view as ASCII text in ``width`` columns: long lines wrap, and a table too wide
    for them is drawn narrow (``_narrow_lines``), so no value is ever cut. With nothing compared
    (a version without requests) there is no table, nor a legend of its columns."""
    lines = [part for line in header_lines(verdict, strict=strict) for part in _wrap(line, width)]
    lines += ["", *[part for line in reason_lines(verdict) for part in _wrap(line, width)]]
    compared = table_rows(verdict)
    if not compared:
        return "\n".join(lines) + "\n"
    rows = [HEADERS, *compared]
    widths = _widths(rows)
    if sum(widths) + 2 * (len(widths) - 1) <= width:
        table = [_text_line(0, list(enumerate(row)), widths) for row in rows]
    else:
        table = [
            part
            for _, indent, cells in _narrow_lines(rows, width)
            for part in _fitted(_text_line(indent, cells, widths), indent, width)
        ]
    lines += ["", *table, "", *_legend_lines(verdict, width)]
    return "\n".join(lines) + "\n"


def _widths(rows: Sequence[tuple[str, ...]]) -> list[int]:
    """Each column's width: its widest cell, header included (in terminal columns)."""
    return [max(text_width(row[i]) for row in rows) for i in range(len(HEADERS))]


def _narrow_lines(
    rows: Sequence[tuple[str, ...]], width: int
) -> Iterator[tuple[int, int, list[tuple[int, str]]]]:
    """The table for a terminal too narrow for it, as (row, indent, [(column, cell)]) lines:
    each route on a line of its own (folded if longer), its metrics indented 2 under it, and
    the columns that do not fit on that line on further lines, indented 4."""
    widths = _widths(rows)
    bands: list[list[int]] = [[]]
    end = 0  # where the last cell placed ends
    for column in range(1, len(HEADERS)):
        start = end + 2
        if bands[-1] and start + widths[column] > width:
            bands.append([])
            start = 4
        bands[-1].append(column)
        end = start + widths[column]
    for number, row in enumerate(rows):
        for part in wrap_text(row[0], width):
            yield number, 0, [(0, part)]
        for band, columns in enumerate(bands):
            yield number, 2 if band == 0 else 4, [(column, row[column]) for column in columns]


def _text_line(indent: int, cells: list[tuple[int, str]], widths: list[int]) -> str:
    return (" " * indent + "  ".join(pad(cell, widths[i]) for i, cell in cells)).rstrip()


def _fitted(line: str, indent: int, width: int) -> list[str]:
    """A line of the narrow table in ``width`` columns: under 40, a cell alone on its line may
    still be wider (``baseline -> canary`` and ``effect (interval)`` take 20 and more), and
    wraps between words, continuing under itself, indented 2 more."""
    if text_width(line) <= width:
        return [line]
    return wrap_text(line, width, " " * (indent + 2), break_on_hyphens=False)


def _legend(verdict: Verdict) -> list[str]:
    q = verdict.settings.tail_quantile * 100
    return [
        f"latency: p50, tail_latency: p{q:g};", "* critical;",
        f"intervals {verdict.settings.confidence:.0%};",
        "adj. p: Holm-corrected, one-sided (canary worse)",
    ]  # fmt: skip


def _legend_lines(verdict: Verdict, width: int) -> list[str]:
    """The legend wrapped between its items, so that no term ("adj. p:", "*") ends a line
    apart from what it means; an item longer than a line wraps between its words."""
    lines = pack(_legend(verdict), width, " ", LEGEND_INDENT)
    return [part for line in lines for part in _wrap(line, width)]


LEGEND_INDENT = "      "  # as a wrapped reason's


def _wrap(line: str, width: int) -> list[str]:
    if text_width(line) <= width:
        return [line]
    return wrap_text(line, width, "      ", break_on_hyphens=False)


def render_rich(console: Console, verdict: Verdict, *, strict: bool = False) -> None:
    """The same view on a terminal: the verdict and classes in colour, the rows as a table."""
    from rich.text import Text

    # wrapped as the text view wraps them: a reason's continuation indented under it, not at
    # the margin where it reads as the next reason (rich still wraps a part too wide for it)
    lines = header_lines(verdict, strict=strict)
    for line in lines[:-1]:
        for part in _wrap(line, console.width):
            console.print(Text(part))
    for part in _wrap(lines[-1], console.width):
        console.print(Text(part, style=STYLES[verdict.verdict]))
    for line in reason_lines(verdict):
        for part in _wrap(line, console.width):
            console.print(Text(part, style="yellow" if line.startswith("warning") else ""))
    rows = table_rows(verdict)
    if not rows:  # nothing compared: no table, nor a legend of its columns
        return
    console.print()
    widths = _widths([HEADERS, *rows])
    # a table while the route has ROUTE_FOLD columns to fold into and the rest fit whole (a
    # column takes 3 more: padding and rule); narrower, the text view's narrow lines, in colour
    if sum(widths[1:]) + min(widths[0], ROUTE_FOLD) + 3 * len(HEADERS) - 1 <= console.width:
        console.print(_rich_table(rows))
    else:
        _print_narrow(console, [HEADERS, *rows])
    for part in _legend_lines(verdict, console.width):
        console.print(Text(part, style="dim"))


def _print_narrow(console: Console, rows: list[tuple[str, ...]]) -> None:
    """The text view's narrow table, its header bold and each class in its colour."""
    from rich.text import Text

    widths = _widths(rows)
    for number, indent, cells in _narrow_lines(rows, console.width):
        line = Text(" " * indent, style="bold" if number == 0 else "")
        for column, cell in cells:
            line.append(pad(cell, widths[column] + 2), STYLES.get(cell) if column == 2 else None)
        line.rstrip()
        if line.cell_len <= console.width:
            console.print(line)
            continue
        for part in _fitted(line.plain, indent, console.width):  # one cell: one style
            console.print(Text(part, style=line.style), soft_wrap=True)


def _rich_table(rows: list[tuple[str, ...]]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, header_style="bold")
    table.add_column(Text(HEADERS[0]), overflow="fold")  # the one column that gives way
    for name in HEADERS[1:]:
        table.add_column(Text(name), no_wrap=True)
    for row in rows:
        cells: Sequence[Text] = [Text(cell) for cell in row]
        cells[2].stylize(STYLES[row[2]])
        table.add_row(*cells)
    return table
