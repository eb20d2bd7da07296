"""Rich views for a terminal: a tree with waterfall bars, a colour per service.

Only imported for ``--format rich``, so the text and JSON paths never load rich. The trace view is
laid out by hand, line by line, and styled with rich's ``Style`` (standard 16 colours); it never
goes through ``rich.console``: that module and its render pipeline cost more start-up time than
everything else ``tracekit trace`` loads, and seconds on a 10,000-span request. The search and
service tables do use a console (``make_console``). Untrusted strings are flattened to one
printable line before they are styled, so a span name cannot inject escape codes or markup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rich.cells import cell_len, chop_cells, set_cell_size
from rich.color import ColorSystem
from rich.style import Style

from tracekit.path import Path, ServiceEdge
from tracekit.records import RequestSummary
from tracekit_cli.options import MAX_ID_CHARS, message_line, one_line
from tracekit_cli.render.columns import pack, words
from tracekit_cli.render.layout import (
    Row,
    bar_span,
    build_rows,
    depth_marker,
    format_ms,
    format_offset,
    format_time,
    hop_text,
    receivers,
    request_name,
    summary_line,
    unplaced_logs,
    unplaced_title,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

Piece = tuple[str, str]  # (text, style name)
Line = list[Piece]

MAX_FOOTER_HOPS = 40  # a terminal summary; text and JSON list every hop
TIMING_WIDTH = 20  # "+offset duration " before the tree
WRAP_INDENT = "    "
MIN_LANE = 10  # cells of waterfall kept however long the names
MIN_NOTE_ROOM = 16  # cells a wrapped note needs beside its guides, else it drops them
MIN_LABEL = 20  # cells of guides, marker, service and name a row keeps beside its times
LEGEND = ["◆ critical path", "⏳ queue wait", "✗ error"]
PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta",
           "bright_green", "bright_yellow", "bright_blue")  # fmt: skip


def make_console(width: int, height: int, *, color: bool, file: object = None) -> Console:
    """A console of fixed size; ``color=False`` (NO_COLOR) keeps the layout without colour."""
    from rich.console import Console

    return Console(
        width=width, height=height, no_color=not color, highlight=False, soft_wrap=False,
        color_system="standard" if color else None, force_terminal=color,
        file=file,  # type: ignore[arg-type]
    )  # fmt: skip


def service_colours(path: Path) -> dict[str, str]:
    """A stable colour per service, in order of first appearance."""
    return {service: PALETTE[i % len(PALETTE)] for i, service in enumerate(path.services)}


class Painter:
    """Turns styled pieces into terminal text: ANSI codes, or plain text without colour."""

    def __init__(self, color: bool) -> None:
        self.system = ColorSystem.STANDARD if color else None
        self.codes: dict[str, tuple[str, str]] = {"": ("", "")}

    def paint(self, text: str, style: str) -> str:
        """``text`` in ``style`` (a rich style name such as ``"bold red"``)."""
        if self.system is None or not text:
            return text
        if style not in self.codes:
            # rich renders the codes once per style; rows then only concatenate strings
            before, _, after = (
                Style.parse(style).render("\0", color_system=self.system).partition("\0")
            )
            self.codes[style] = (before, after)
        before, after = self.codes[style]
        return before + text + after

    def line(self, pieces: Line) -> str:
        """One line, each piece in its own style."""
        return "".join([self.paint(text, style) for text, style in pieces])


def format_path(path: Path, width: int, *, color: bool, with_logs: bool = True) -> str:
    """The trace view as terminal text, every line at most ``width`` cells."""
    painter = Painter(color)
    colours = service_colours(path)
    wrapped = [part for line in _header(path, colours) for part in wrap(line, width)]
    rows = _SpanLines(path, colours, width, with_logs).lines() if path.spans else []
    unplaced = _unplaced(path, colours) if with_logs else []
    rows += [part for line in unplaced for part in wrap(line, width)]
    legend = [[(part, "dim")] for part in pack(LEGEND, width)] if path.spans else []
    footer = [part for line in _footer(path, colours) for part in wrap(line, width)]
    return "".join(painter.line(line) + "\n" for line in [*wrapped, *rows, *legend, *footer])


def _unplaced(path: Path, colours: dict[str, str]) -> list[Line]:
    logs = unplaced_logs(path)
    lines: list[Line] = [[("", "")], [(unplaced_title(path), "bold")]] if logs else []
    for log in logs:
        lines.append([
            ("  │ " + format_time(log.time_unix_nano)[11:23] + " ", "dim"),
            (one_line(log.severity, 10) + " ", _severity_style(log.severity)),
            (one_line(log.service, 40), colours.get(log.service, "")),
            (": " + message_line(log.body), "dim"),
        ])  # fmt: skip
    return lines


def render_path(console: Console, path: Path, *, with_logs: bool = True) -> None:
    """Print the trace view on ``console`` (its width; colour unless it has none)."""
    color = console.color_system is not None and not console.no_color
    console.file.write(format_path(path, console.width, color=color, with_logs=with_logs))


def _header(path: Path, colours: dict[str, str]) -> list[Line]:
    route: Line = [("path: ", "")]
    for i, service in enumerate(path.services):
        route += [(" → " if i else "", ""), (one_line(service, 40), colours.get(service, ""))]
    title = one_line(path.correlation_id or path.query, MAX_ID_CHARS)  # whole: it is copied
    return [[("request " + title, "bold")], [(summary_line(path, " · "), "dim")], route]


def wrap(
    line: Line, width: int, indent: tuple[str, str] = (WRAP_INDENT, ""), *, fold: bool = True
) -> list[Line]:
    """Word-wrap styled pieces at ``width`` cells; continuation lines start with ``indent``.
    A word longer than a line is folded over lines, or with ``fold=False`` (IDs, which are
    copied) put whole on a line of its own, without the indent."""
    if sum(cell_len(text) for text, _ in line) <= width:
        return [line]
    out: list[Line] = [[]]
    used, indented = 0, cell_len(indent[0])
    room = max(width - indented, 1)
    for text, style in line:
        for word in words(text):
            for part in _fold(word, room) if fold else [word]:
                size = cell_len(part)
                if not fold and size > room and used > 0:  # alone on its line, whole
                    _strip_end(out[-1])
                    if any(piece for piece, _ in out[-1]):
                        out.append([])
                    out[-1].clear()
                    used = 0
                elif used + size > width and used > indented:
                    if part.isspace():
                        continue  # the break itself
                    _strip_end(out[-1])
                    out.append([indent])
                    used = indented
                if part.isspace() and size > width - used:  # padding: shortening loses nothing
                    size = max(width - used, 0)
                    part = set_cell_size(part, size)
                _append(out[-1], part, style)
                used += size
    return out


def _fold(word: str, room: int) -> list[str]:
    """A word longer than a line, in pieces that each fit one: an ID, a URL or a name in wide
    characters continues on the next line instead of being cut short (never mid-character)."""
    if word.isspace() or cell_len(word) <= room:
        return [word]
    return chop_cells(word, room)


def _strip_end(line: Line) -> None:
    if line:
        line[-1] = (line[-1][0].rstrip(), line[-1][1])


def _append(line: Line, text: str, style: str) -> None:
    """Add a piece, merged into the last one when it has the same style (fewer escape codes)."""
    if line and line[-1][1] == style:
        line[-1] = (line[-1][0] + text, style)
    else:
        line.append((text, style))


def crop(line: Line, width: int, *, marked: bool = False) -> Line:
    """The pieces that fit in ``width`` cells (a row never wraps: the tree would break);
    ``marked``: a line cut short ends in ``…``, so its last words are not taken for the end."""
    sizes = [len(text) if text.isascii() else cell_len(text) for text, _ in line]
    if sum(sizes) <= width:
        return line
    if marked and width > 1:
        shown = crop(line, width - 1)
        return [*shown, ("…", shown[-1][1] if shown else "")]
    out: Line = []
    room = width
    for (text, style), size in zip(line, sizes, strict=True):
        if size > room:
            if room > 0:
                out.append((set_cell_size(text, room), style))
            return out
        out.append((text, style))
        room -= size
    return out


class _SpanLines:
    """The span rows and their notes (queue wait, error, log lines) as styled pieces."""

    def __init__(self, path: Path, colours: dict[str, str], width: int, with_logs: bool):
        self.path, self.colours, self.width = path, colours, width
        self.rows = build_rows(path, with_logs=with_logs)
        lane = max(MIN_LANE, width // 4)
        label_width = max(MIN_LABEL, width - TIMING_WIDTH - lane - 2)
        # the lane gives way before a name is cut: "send pricing.1" and "send pricing.2" both
        # read "send pric…" at 80 columns, and the end of a name is often what tells rows apart
        given = min(max(self._widest_label() - label_width, 0), lane - MIN_LANE)
        self.lane, self.label_width = lane - given, label_width + given
        self.guides_width = self.label_width - 14  # a deep row keeps room for its name
        # rows are laid out to the width; only narrow terminals (or wide characters) need cropping
        self.fits = TIMING_WIDTH + self.label_width + 2 + self.lane <= width

    def _widest_label(self) -> int:
        """Cells the widest row's guides, marker, service and name take, uncut."""
        guides = ((len(row.guides) + (row.span.parent is not None)) * 3 for row in self.rows)
        names = (_cells(row.service) + 1 + _cells(row.name) for row in self.rows)
        return max((g + 2 + n for g, n in zip(guides, names, strict=True)), default=0)

    def lines(self) -> list[Line]:
        narrow = self.width < TIMING_WIDTH + MIN_LABEL
        header = f"{'offset':>9} {'duration':>9} {'span':<{self.label_width}}  waterfall"
        out: list[Line] = [[(header[: self.width], "bold")]] if not narrow else []
        for row in self.rows:
            if narrow:
                out += self.narrow_row(row)
                if row.has_notes:
                    out += self.note_lines(row, narrow=True)
                continue
            pieces = self.row_pieces(row)
            fits = self.fits and row.service.isascii() and row.name.isascii()
            out.append(pieces if fits else crop(pieces, self.width))
            if row.has_notes:
                out += self.note_lines(row)
        return out

    def note_lines(self, row: Row, *, narrow: bool = False) -> list[Line]:
        """A row's notes under it: queue waits, the request's end and errors wrap (a narrow
        terminal must not cut what they say), log lines are cropped (a preview: JSON has them
        whole). Deep trees keep the nearest guides, as the rows do. ``narrow``: rows drawn
        without times beside them (``narrow_row``), whose log lines move left too."""
        lines: list[Line] = []
        for pad, text, wraps in _notes(row):
            if narrow:  # as its row: no times before the guides, the nearest of them kept
                pad = _keep_right(pad, self.width // 3)
            else:
                pad = " " * TIMING_WIDTH + _keep_right(pad, self.guides_width + 5)
            if (wraps or narrow) and self.width - cell_len(pad) < MIN_NOTE_ROOM:
                pad = WRAP_INDENT  # too narrow for the guides: the note keeps room for its words
            line = [(pad, "dim"), *text]
            if wraps:
                lines += wrap(line, self.width, (pad + "  ", "dim"))
            else:
                lines.append(crop(line, self.width, marked=True))
        return lines

    def narrow_row(self, row: Row) -> list[Line]:
        """A row on a terminal too narrow for its times beside a name (under 40 cells: the
        name was cut to nothing, a row read '+0.0 ms  120.0 ms' alone): its guides, marker,
        service and name, folded over lines, then its offset and duration under them."""
        connector = "" if row.span.parent is None else ("└─ " if row.last else "├─ ")
        below = "" if row.span.parent is None else ("   " if row.last else "│  ")
        keep = self.width // 3  # the nearest guides; the outermost give way to "…"
        guides = _keep_right(_guides(row) + connector + depth_marker(row), keep)
        under = _keep_right(_guides(row) + below, keep) + ("│  " if row.span.children else "   ")
        name: Line = [
            (guides, "dim"),
            ("◆ " if row.critical else "  ", "bold yellow" if row.critical else ""),
            (one_line(row.service, 200), f"bold {self.colours.get(row.span.service, '')}"),
            (" " + one_line(row.name, 500), "red" if row.error else ""),
        ]
        times: Line = [
            (under, "dim"),
            (f"{format_offset(row.offset_ms)} ", "dim"),
            (format_ms(row.duration_ms), "red" if row.error else ""),
        ]
        return [*wrap(name, self.width, (under, "dim")), *wrap(times, self.width, (under, "dim"))]

    def row_pieces(self, row: Row) -> Line:
        colour = self.colours.get(row.span.service, "")
        connector = "" if row.span.parent is None else ("└─ " if row.last else "├─ ")
        guides = _keep_right(_guides(row) + connector + depth_marker(row), self.guides_width)
        marker = "◆ " if row.critical else "  "
        room = self.label_width - len(guides) - len(marker)
        service = _fit(row.service, max(room, 1))
        name = _fit(" " + row.name, max(room - _cells(service), 0))
        pad = " " * max(room - _cells(service) - _cells(name), 0)
        start, length = bar_span(row, self.path.duration_ms, self.lane)
        return [
            (f"{format_offset(row.offset_ms):>9} ", "dim"),
            (f"{format_ms(row.duration_ms):>9} ", ""),
            (guides, "dim"),
            (marker, "bold yellow" if row.critical else ""),
            (service, f"bold {colour}"),
            (name + pad + "  ", "red" if row.error else ""),
            (" " * start, ""),
            ("█" * length, "red" if row.error else colour),
        ]


def _fit(text: str, room: int) -> str:
    """``text`` in at most ``room`` cells, closed by '…' when cut (a wide character takes two
    cells: counting characters pushed the waterfall bar off the row)."""
    if _cells(text) <= room:
        return text
    return set_cell_size(text, room - 1) + "…" if room > 0 else ""


def _cells(text: str) -> int:
    return len(text) if text.isascii() else cell_len(text)  # the common case, at C speed


_GUIDES: dict[tuple[bool, ...], str] = {}


def _guides(row: Row) -> str:
    """The vertical lines of the ancestors (few distinct shapes: cached)."""
    drawn = _GUIDES.get(row.guides)
    if drawn is None:
        drawn = _GUIDES[row.guides] = "".join("│  " if more else "   " for more in row.guides)
    return drawn


def _keep_right(guides: str, limit: int) -> str:
    """Deep trees keep their nearest guides and the connector; the outermost give way to '…'."""
    return guides if len(guides) <= limit else "…" + guides[len(guides) - limit + 1 :]


def _notes(row: Row) -> list[tuple[str, Line, bool]]:
    """Each note's guides, its text, and whether it wraps (a log line is cropped instead)."""
    below = "" if row.span.parent is None else ("   " if row.last else "│  ")
    pad = _guides(row) + below + ("│  " if row.span.children else "   ") + "  "
    notes: list[tuple[str, Line, bool]] = []
    if row.queue is not None:
        wait = format_ms(row.queue.queue_wait_ms or 0.0)
        notes.append((pad, [(f"⏳ waited {wait} in queue {hop_text(row.queue)}", "yellow")], True))
    notes += [(pad, [(f"⏳ {note}", "dim yellow")], True) for note in row.queue_notes]
    if row.measured_wait is not None:
        notes.append((pad, [(f"⏳ waited {row.measured_wait}", "yellow")], True))
    notes += [(pad, [(f"⏳ {note}", "dim yellow")], True) for note in row.consumed]
    if row.ends_request:
        notes.append((pad, [(f"◆ {row.ends_request}", "bold yellow")], True))
    if row.error:
        notes.append((pad, [(f"✗ {row.error}", "bold red")], True))
    for log in row.logs:
        notes.append((pad, [
            ("│ " + format_time(log.time_unix_nano)[11:23] + " ", "dim"),
            (one_line(log.severity, 10) + " ", _severity_style(log.severity)),
            (message_line(log.body), "dim"),
        ], False))  # fmt: skip
    return notes


def _severity_style(severity: str) -> str:
    upper = severity.upper()
    if upper.startswith(("ERROR", "FATAL", "CRITICAL")):
        return "bold red"
    return "yellow" if upper.startswith("WARN") else "dim"


def _footer(path: Path, colours: dict[str, str]) -> list[Line]:
    lines: list[Line] = []
    received_by = receivers(path)
    for hop in path.hops[:MAX_FOOTER_HOPS]:
        line: Line = [
            ("  ", ""), (one_line(hop.from_service, 40), colours.get(hop.from_service, "")),
            (" → ", ""), (one_line(hop.to_service, 40), colours.get(hop.to_service, "")),
            (f"  {hop_text(hop, receiver=received_by.get(hop.receiver_key))}"
             f"  {format_ms(hop.latency_ms)}", ""),
        ]  # fmt: skip
        if hop.queue_wait_ms is not None:
            line.append((f"  queue wait {format_ms(hop.queue_wait_ms)}", "yellow"))
        lines.append(line)
    if len(path.hops) > MAX_FOOTER_HOPS:
        hidden = len(path.hops) - MAX_FOOTER_HOPS
        lines.append([(f"  … {hidden} more hops (--format text or json lists them all)", "dim")])
    for error in path.errors:
        message = (
            f"  ✗ {one_line(error.service, 40)} ({error.span_id}): {message_line(error.message)}"
        )
        lines.append([(message, "red")])
    lines += [[(f"  ⚠ {one_line(w)}", "yellow")] for w in path.warnings]
    return lines


def render_requests(console: Console, requests: Sequence[RequestSummary]) -> None:
    """``tracekit search`` as a table; on a terminal too narrow for it, a block per request."""
    from rich.text import Text

    ids = [_request_id(r) for r in requests]
    cells = [_request_cells(r) for r in requests]
    whole = [max(len(name), *(cell_len(row[i]) for row in cells)) for i, name in
             enumerate(_WHOLE_REQUEST_COLUMNS)]  # fmt: skip
    # the ID is what the user copies into `tracekit trace`: folded over lines, a double-click
    # takes a third of it, so a terminal that cannot show every ID whole gets the blocks
    id_width = _id_column_width(
        requests, ids, lambda width: _table_fits([*whole, width, MIN_ROOT_COLUMN], console.width)
    )
    if id_width is None:
        blocks = [_request_block(r, i, c) for r, i, c in zip(requests, ids, cells, strict=True)]
        print_lines(console, [line for block in blocks for line in block])
        return
    table = _table()
    for name in _WHOLE_REQUEST_COLUMNS:
        table.add_column(name, justify="right" if name in ("duration", "spans") else "left",
                         no_wrap=True, min_width=len(name))  # fmt: skip
    table.add_column(ID_HEADER, no_wrap=True, min_width=id_width)
    # the one column that gives way: the root wraps between words
    table.add_column("root", overflow="fold", min_width=MIN_ROOT_COLUMN)
    for r, request_id, (start, duration, spans, _) in zip(requests, ids, cells, strict=True):
        if not r.correlation_id and cell_len(request_id) > id_width:
            request_id = f"trace\n{r.trace_id}"  # the label over the ID (see _id_column_width)
        table.add_row(
            start, duration, spans, Text("✗", style="bold red") if r.error else "",
            Text(request_id, style="" if r.correlation_id else "dim"),
            Text(_root_of(r)),
        )  # fmt: skip
    console.print(table)


def _id_column_width(
    requests: Sequence[RequestSummary], ids: list[str], fits: Callable[[int], bool]
) -> int | None:
    """Cells for the ID column, the fewest of those with which the table ``fits``, or None when
    some ID cannot stand whole in any. A trace ID's label ("trace") stands beside it where there
    is room, else above it: beside it, the label alone made the table six columns wider than
    32-hex correlation IDs do."""
    beside = max(len(ID_HEADER), *(cell_len(request_id) for request_id in ids))
    above = max(len(ID_HEADER), *(cell_len(i) if r.correlation_id else len(r.trace_id)
                                  for r, i in zip(requests, ids, strict=True)))  # fmt: skip
    return next((width for width in (beside, above) if fits(width)), None)


_WHOLE_REQUEST_COLUMNS = ("start (UTC)", "duration", "spans", "error")
ID_HEADER = "correlation id"
MIN_ROOT_COLUMN = 16  # cells the root wraps into beside whole IDs; narrower, a block per request


def _request_id(request: RequestSummary) -> str:
    """The correlation ID, or (labelled) the trace ID of a request that has none."""
    if request.correlation_id:
        return one_line(request.correlation_id, 128)
    return f"trace {request.trace_id}"


def _request_cells(r: RequestSummary) -> tuple[str, str, str, str]:
    """The cells of the columns kept whole: start, duration, span count, error."""
    start, duration = format_time(r.start_unix_nano)[:23], format_ms(r.duration_ms)
    return start, duration, str(r.span_count), "✗" if r.error else ""


def _root_of(r: RequestSummary) -> str:
    return f"{one_line(r.root_service, 40)}: {request_name(r, 80)}"


def _table_fits(widths: list[int], width: int) -> bool:
    """Whether columns of ``widths`` cells fit: a cell of padding each side, a rule between."""
    return sum(widths) + 3 * len(widths) - 1 <= width


def _request_block(
    r: RequestSummary, request_id: str, cells: tuple[str, ...]
) -> list[tuple[Line, bool]]:
    """One request on a narrow terminal: the ID on a line of its own, whole (it is copied), then
    the numbers, the root and the trace ID, wrapped between words (see ``_print_lines``)."""
    start, duration, spans, _ = cells
    facts = f"  {start} UTC · {duration} · {spans} span{'' if r.span_count == 1 else 's'}"
    lines: list[tuple[Line, bool]] = [
        ([(request_id, "bold" if r.correlation_id else "dim")], False),
        ([(facts, "")], True),
    ]
    if r.error:
        lines.append(([("  ✗ error", "bold red")], True))
    lines.append(([("  " + _root_of(r), "")], True))
    if r.correlation_id:
        lines.append(([("  trace " + r.trace_id, "dim")], False))
    return lines


def print_lines(console: Console, lines: list[tuple[Line, bool]]) -> None:
    """Styled lines wrapped at the console's width between words, each with whether a word
    longer than a line folds onto the next lines (a route, a service name) or, in a line of
    IDs, which are copied, stands alone on its line, whole."""
    from rich.text import Text

    for line, fold in lines:
        for part in wrap(line, console.width, fold=fold):
            console.print(Text.assemble(*part), no_wrap=True, overflow="ignore", crop=False)


def render_edges(console: Console, edges: Sequence[ServiceEdge]) -> None:
    """``tracekit services`` as a table; on a terminal too narrow for it, a block per edge."""
    from rich.text import Text

    rows = [_edge_cells(e) for e in edges]
    widths = [max(cell_len(name), *(cell_len(row[i]) for row in rows)) for i, name in
              enumerate(_EDGE_COLUMNS)]  # fmt: skip
    if not _table_fits(widths, console.width):
        print_lines(console, [line for e, row in zip(edges, rows, strict=True)
                              for line in _edge_block(e, row)])  # fmt: skip
        return
    table = _table()
    for name in _EDGE_COLUMNS:
        table.add_column(name, justify="left" if name in ("from", "to", "type") else "right",
                         no_wrap=True)  # fmt: skip
    for e, (caller, callee, kind, calls, rate, p50, p95) in zip(edges, rows, strict=True):
        table.add_row(
            Text(caller), Text(callee), kind, calls,
            Text(rate, style="red" if e.errors else ""), p50, p95,
        )  # fmt: skip
    console.print(table)


def render_services(console: Console, seen: Sequence[tuple[str, int]]) -> None:
    """``tracekit services`` with no calls between services: a line per service seen, its name
    and its requests, wrapped between words on a narrow terminal."""
    print_lines(console, [
        ([(one_line(name, 40), "bold"), (f" · {n} request{'' if n == 1 else 's'}", "")], True)
        for name, n in seen
    ])  # fmt: skip


_EDGE_COLUMNS = ("from", "to", "type", "calls", "errors", "p50", "p95")


def _edge_cells(e: ServiceEdge) -> tuple[str, str, str, str, str, str, str]:
    return (
        one_line(e.from_service, 40), one_line(e.to_service, 40), e.type, str(e.calls),
        f"{e.error_rate:.1%}", format_ms(e.p50_ms), format_ms(e.p95_ms),
    )  # fmt: skip


def _edge_block(e: ServiceEdge, cells: tuple[str, ...]) -> list[tuple[Line, bool]]:
    """One edge on a narrow terminal: who calls whom, then its numbers, wrapped, a service
    name longer than a line folded."""
    caller, callee, kind, calls, rate, p50, p95 = cells
    lines: list[Line] = [
        [(caller, "bold"), (" → ", ""), (callee, "bold")],
        [(f"  {kind} · {calls} call{'' if e.calls == 1 else 's'} · ", ""),
         (f"{rate} errors", "red" if e.errors else "")],
        [(f"  p50 {p50} · p95 {p95}", "")],
    ]  # fmt: skip
    return [(line, True) for line in lines]


def _table() -> Table:
    # imported here: the trace view, the start-up-sensitive path, never draws a table
    from rich.table import Table

    return Table(show_edge=False, header_style="bold")
