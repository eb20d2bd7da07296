"""Rich views for a terminal: a tree with waterfall bars, a colour per service.

Only imported for ``--format rich``, so the text and JSON paths never load rich. Every untrusted
string goes in as ``rich.text.Text`` (never markup), so a span name cannot inject styles.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text

from tracekit.path import Path, ServiceEdge
from tracekit.records import RequestSummary
from tracekit_cli.options import one_line
from tracekit_cli.render.layout import (
    Row,
    bar_span,
    build_rows,
    depth_marker,
    format_ms,
    format_time,
    hop_text,
    summary_line,
)

MAX_FOOTER_HOPS = 40  # a terminal summary; text and JSON list every hop
TIMING_WIDTH = 20  # "+offset duration " before the tree
PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta",
           "bright_green", "bright_yellow", "bright_blue")  # fmt: skip


def make_console(width: int, *, color: bool, file: object = None) -> Console:
    """A console of fixed width; ``color=False`` (NO_COLOR) keeps the layout without colour."""
    return Console(
        width=width, no_color=not color, highlight=False, soft_wrap=False,
        color_system="standard" if color else None, force_terminal=color,
        file=file,  # type: ignore[arg-type]
    )  # fmt: skip


def service_colours(path: Path) -> dict[str, str]:
    """A stable colour per service, in order of first appearance."""
    return {service: PALETTE[i % len(PALETTE)] for i, service in enumerate(path.services)}


def render_path(console: Console, path: Path, *, with_logs: bool = True) -> None:
    """Print the trace view."""
    colours = service_colours(path)
    title = one_line(path.correlation_id or path.query, 120)
    console.print(Text("request " + title, style="bold"))
    console.print(Text(summary_line(path, " · "), style="dim"))
    route = Text("path: ")
    for i, service in enumerate(path.services):
        route.append(" → " if i else "")
        route.append(one_line(service, 40), style=colours.get(service, ""))
    console.print(route)
    console.print(_SpanLines(path, colours, console.width, with_logs), crop=True)
    console.print(_footer(path, colours))


class _SpanLines:
    """The span rows as pre-styled segments, one line each.

    Laid out by hand rather than with rich's Table or Text: those wrap and measure every cell,
    which takes seconds on a 10,000-span request; segments go straight to the terminal.
    """

    def __init__(self, path: Path, colours: dict[str, str], width: int, with_logs: bool):
        self.path, self.colours, self.width = path, colours, width
        self.rows = build_rows(path, with_logs=with_logs)
        self.lane = max(10, width // 4)
        self.label_width = max(20, width - TIMING_WIDTH - self.lane - 2)
        self.styles: dict[str, Style] = {}

    def style(self, name: str) -> Style:
        if name not in self.styles:
            self.styles[name] = Style.parse(name) if name else Style.null()
        return self.styles[name]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        header = f"{'offset':>9} {'duration':>9} {'span':<{self.label_width}}  waterfall"
        yield Segment(header[: self.width], self.style("bold"))
        yield Segment.line()
        for row in self.rows:
            yield from self.row_segments(row)
            yield Segment.line()
            for note in _notes(row):
                yield Segment(" " * TIMING_WIDTH)
                yield from note.render(console)
                yield Segment.line()

    def row_segments(self, row: Row) -> list[Segment]:
        colour = self.colours.get(row.span.service, "")
        connector = "" if row.span.parent is None else ("└─ " if row.last else "├─ ")
        guides = (_guides(row) + connector + depth_marker(row))[: self.label_width // 2]
        marker = "◆ " if row.critical else "  "
        room = self.label_width - len(guides) - len(marker)
        service = _fit(row.service, max(room, 1))
        name = _fit(" " + row.name, max(room - len(service), 0))
        pad = " " * max(room - len(service) - len(name), 0)
        start, length = bar_span(row, self.path.duration_ms, self.lane)
        bar_style = "red" if row.error else colour
        return [
            Segment(f"{'+' + format_ms(row.offset_ms):>9} ", self.style("dim")),
            Segment(f"{format_ms(row.duration_ms):>9} "),
            Segment(guides, self.style("dim")),
            Segment(marker, self.style("bold yellow" if row.critical else "")),
            Segment(service, self.style(f"bold {colour}")),
            Segment(name + pad + "  ", self.style("red" if row.error else "")),
            Segment(" " * start + "█" * length, self.style(bar_style)),
        ]


def _fit(text: str, room: int) -> str:
    return text if len(text) <= room else text[: max(room - 1, 0)] + "…"[: max(room, 0)]


def _guides(row: Row) -> str:
    return "".join("│  " if more else "   " for more in row.guides)


def _label(row: Row, colour: str) -> Text:
    connector = "" if row.span.parent is None else ("└─ " if row.last else "├─ ")
    label = Text()
    label.append(_guides(row) + connector + depth_marker(row), style="dim")
    label.append("◆ " if row.critical else "  ", style="bold yellow" if row.critical else "")
    label.append(row.service, style=f"bold {colour}")
    label.append(" " + row.name, style="red" if row.error else "")
    return label


def _bar(row: Row, total_ms: float, lane: int, colour: str) -> Text:
    start, length = bar_span(row, total_ms, lane)
    bar = Text(" " * start)
    bar.append("█" * length, style="red" if row.error else colour)
    return bar


def _notes(row: Row) -> list[Text]:
    below = "" if row.span.parent is None else ("   " if row.last else "│  ")
    pad = _guides(row) + below + ("│  " if row.span.children else "   ") + "  "
    notes = []
    if row.queue is not None:
        wait = format_ms(row.queue.queue_wait_ms or 0.0)
        notes.append(Text(pad + f"⏳ waited {wait} in queue {hop_text(row.queue)}", "yellow"))
    if row.error:
        notes.append(Text(pad + f"✗ {row.error}", style="bold red"))
    for log in row.logs:
        line = Text(pad + "│ " + format_time(log.time_unix_nano)[11:23] + " ", style="dim")
        line.append(one_line(log.severity, 10) + " ", style=_severity_style(log.severity))
        line.append(one_line(log.body))
        notes.append(line)
    return notes


def _severity_style(severity: str) -> str:
    upper = severity.upper()
    if upper.startswith(("ERROR", "FATAL", "CRITICAL")):
        return "bold red"
    return "yellow" if upper.startswith("WARN") else "dim"


def _footer(path: Path, colours: dict[str, str]) -> Group:
    parts: list[Text] = [Text("◆ critical path   ⏳ queue wait   ✗ error", style="dim")]
    for hop in path.hops[:MAX_FOOTER_HOPS]:
        line = Text("  ")
        line.append(one_line(hop.from_service, 40), colours.get(hop.from_service, ""))
        line.append(" → ")
        line.append(one_line(hop.to_service, 40), colours.get(hop.to_service, ""))
        line.append(f"  {hop_text(hop)}  {format_ms(hop.latency_ms)}")
        if hop.queue_wait_ms is not None:
            line.append(f"  queue wait {format_ms(hop.queue_wait_ms)}", style="yellow")
        parts.append(line)
    if len(path.hops) > MAX_FOOTER_HOPS:
        hidden = len(path.hops) - MAX_FOOTER_HOPS
        parts.append(Text(f"  … {hidden} more hops (--format text or json lists them all)", "dim"))
    for error in path.errors:
        parts.append(Text(f"  ✗ {one_line(error.service, 40)} ({error.span_id}): "
                          f"{one_line(error.message)}", style="red"))  # fmt: skip
    parts.extend(Text(f"  ⚠ {one_line(w)}", style="yellow") for w in path.warnings)
    return Group(*parts)


def render_requests(console: Console, requests: Sequence[RequestSummary]) -> None:
    """``tracekit search`` as a table."""
    table = Table(show_edge=False, header_style="bold")
    for name in ("start (UTC)", "duration", "spans", "error", "correlation id", "root"):
        right = name in ("duration", "spans")
        table.add_column(name, justify="right" if right else "left", no_wrap=True)
    for r in requests:
        table.add_row(
            format_time(r.start_unix_nano)[:23], format_ms(r.duration_ms), str(r.span_count),
            Text("✗", style="bold red") if r.error else "",
            Text(one_line(r.correlation_id or r.trace_id, 64)),
            Text(f"{one_line(r.root_service, 40)}: {one_line(r.root_name, 80)}"),
        )  # fmt: skip
    console.print(table)


def render_edges(console: Console, edges: Sequence[ServiceEdge]) -> None:
    """``tracekit services`` as a table."""
    table = Table(show_edge=False, header_style="bold")
    for name in ("from", "to", "type", "calls", "errors", "p50", "p95"):
        table.add_column(name, justify="left" if name in ("from", "to", "type") else "right")
    for e in edges:
        table.add_row(
            Text(one_line(e.from_service, 40)), Text(one_line(e.to_service, 40)), e.type,
            str(e.calls), Text(f"{e.error_rate:.1%}", style="red" if e.errors else ""),
            format_ms(e.p50_ms), format_ms(e.p95_ms),
        )  # fmt: skip
    console.print(table)
