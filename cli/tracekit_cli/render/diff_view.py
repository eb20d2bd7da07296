"""``tracekit diff`` views, read like a code diff: unchanged context dim, added green, removed red,
changed with the delta (slower yellow, faster cyan).

One layout for both views: lines of styled pieces, each either a row (cropped to the width: the
tree must not break) or a note (wrapped); a tree row whose node would keep fewer than
``MIN_LABEL_WIDTH`` columns beside its figures and guides has its node drawn on the next line,
and on a terminal narrower than the figures' columns (under 34 for two requests) each row is
its node, then its figures in words, both wrapped, and the columns' heading is left out.
The text view drops the styles and draws ASCII; the rich view paints them (``Painter``, never
``rich.console``, as ``tracekit trace`` does). Names come from spans (untrusted) and are
flattened to one printable line before anything is drawn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from tracekit.diff import Change, FailOn, NodeDiff, PairDiff, Share, Side, reasons
from tracekit.diff.changes import TIMING_METRICS
from tracekit.diff.nodes import Node
from tracekit.diff.words import duration, signed
from tracekit_cli.options import one_line
from tracekit_cli.render.columns import text_width, wrap_text
from tracekit_cli.render.layout import MAX_GUIDES, format_time

Piece = tuple[str, str]  # (text, rich style)
Line = list[Piece]


@dataclass(frozen=True, slots=True)
class Glyphs:
    """What the tree and the notes are drawn with."""

    arrow: str
    tee: str
    corner: str
    pipe: str
    error: str
    unicode: bool

    @property
    def cut(self) -> str:
        """What ends a name cut at the terminal's edge, as ``trace`` ends one."""
        return "…" if self.unicode else "..."


ASCII = Glyphs("->", "+- ", "`- ", "|  ", "!", unicode=False)
UNICODE = Glyphs("→", "├─ ", "└─ ", "│  ", "✗", unicode=True)
MARKERS = {"same": " ", "added": "+", "removed": "-", "changed": "~", "too_few": "?"}
ROW_STYLES = {
    "same": "dim", "added": "green", "removed": "red", "changed": "", "too_few": "magenta"
}  # fmt: skip
MAX_ATTRIBUTION = 10  # the largest parts, listed in a terminal view; JSON lists all
MAX_NOTE_CHARS = 600
MIN_NOTE_WIDTH = 24  # columns a note keeps beside its indent, however narrow the terminal
MIN_LABEL_WIDTH = 16  # columns a tree row's node keeps beside it, else it goes on a line below
NODE_INDENT = "    "  # where such a node goes


@dataclass(slots=True)
class Document:
    """The view as lines, each a ``row`` (cropped), a ``note`` (wrapped), a ``heading`` (a
    row over the tree's columns) or a ``tree`` row (cropped, its last piece the node's label,
    see ``laid_out``), with the notes drawn instead of it on a terminal narrower than
    ``columns``, the width of the figures before the tree."""

    glyphs: Glyphs
    lines: list[tuple[Line, str, list[Line]]]
    columns: int = 0

    def row(self, *pieces: Piece) -> None:
        """A line that is cropped at the width."""
        self.lines.append((list(pieces), "row", []))

    def note(self, *pieces: Piece) -> None:
        """A line that wraps at the width."""
        self.lines.append((list(pieces), "note", []))

    def heading(self, *pieces: Piece) -> None:
        """The row naming the tree's columns, left out where they are not drawn."""
        self.lines.append((list(pieces), "heading", []))

    def tree_row(self, *pieces: Piece, narrow: Sequence[Line] = ()) -> None:
        """A row of the tree: figures, guides, then the node's label (the last piece); the
        notes ``narrow`` instead on a terminal narrower than ``columns``."""
        self.lines.append((list(pieces), "tree", list(narrow)))

    def text(self, text: str) -> str:
        """An untrusted or library sentence, flattened, with the view's arrows."""
        flat = one_line(text, MAX_NOTE_CHARS)
        return flat.replace(" -> ", f" {self.glyphs.arrow} ") if self.glyphs.unicode else flat

    def label(self, node: Node) -> str:
        """A node's label, flattened, with the view's arrow."""
        return one_line(node.label(self.glyphs.arrow), 300)


def laid_out(document: Document, width: int) -> Iterator[tuple[Line, bool]]:
    """The document's lines for ``width`` columns, each with whether it wraps: a tree row whose
    node would keep fewer than ``MIN_LABEL_WIDTH`` columns (a deep node, a narrow terminal)
    is its figures and guides, then its node on a note of its own, whole rather than cut to
    a few letters; a node with more columns than that, but fewer than it needs, is cut there
    and ends in an ellipsis, never read as a whole name. Narrower than the figures' columns,
    a tree row is its ``narrow`` notes, and the heading over the columns is left out: cut at
    the terminal's edge, the figures lost their delta and the heading read "A" alone."""
    narrow = width < document.columns
    for line, kind, instead in document.lines:
        if narrow and (kind == "heading" or instead):
            yield from ((each, True) for each in instead)
            continue
        room = width - sum(text_width(text) for text, _ in line[:-1])
        if kind != "tree" or room >= text_width(line[-1][0]):
            yield line, kind == "note"
        elif room >= MIN_LABEL_WIDTH:
            label, style = line[-1]
            yield [*line[:-1], (_cut(label, room, document.glyphs.cut), style)], False
        else:
            yield line[:-1], False
            yield [(NODE_INDENT, ""), line[-1]], True


def _cut(label: str, room: int, mark: str) -> str:
    """``label`` in ``room`` columns, its end replaced by ``mark``."""
    if label.isascii():
        return label[: room - len(mark)] + mark
    from rich.cells import set_cell_size

    return set_cell_size(label, room - text_width(mark)).rstrip() + mark


def to_text(document: Document, width: int) -> str:
    """Plain text, every line at most ``width`` columns."""
    out: list[str] = []
    for line, wraps in laid_out(document, width):
        pieces = _narrow_indent(line, width) if wraps else line
        text = "".join(piece for piece, _ in pieces)
        if wraps and text_width(text) > width:
            out += wrap_text(text, width, _continuation(pieces)[0])
        else:
            out.append(_crop_text(text, width).rstrip())
    return "\n".join(out) + "\n"


def _crop_text(text: str, width: int) -> str:
    if text.isascii():
        return text[:width]
    from tracekit_cli.render.rich_view import crop

    return "".join(piece for piece, _ in crop([(text, "")], width))


def to_rich(document: Document, width: int, *, color: bool) -> str:
    """Terminal text with styles (plain when ``color`` is off), every line at most ``width``."""
    from tracekit_cli.render.rich_view import Painter, crop, wrap

    painter = Painter(color)
    out = []
    for line, wraps in laid_out(document, width):
        parts = [crop(line, width)]
        if wraps:
            note = _narrow_indent(line, width)
            parts = wrap(note, width, _continuation(note))
        out += [painter.line(part).rstrip() for part in parts]
    return "\n".join(out) + "\n"


def _continuation(line: Line) -> Piece:
    """What a note's continuation lines start with: past where its words begin, not under the
    A and B columns. The first piece is the indent: a note under a tree row (spaces and the
    tree's guides) goes on with the guides, so the tree below it reads unbroken; else its
    spaces alone count (a figure the next piece right-aligns, in where the time went, keeps its
    padding out of it, so the rows' continuations line up)."""
    indent, style = line[0] if line else ("", "")
    if indent.strip() and not indent.strip(" " + _GUIDES):
        return indent + "    ", style
    return " " * (len(indent) - len(indent.lstrip(" ")) + 4), ""


_GUIDES = ASCII.pipe.strip() + UNICODE.pipe.strip()  # what a tree's lines below a node hold


def _narrow_indent(note: Line, width: int) -> Line:
    """``note`` with its indent (the first piece: spaces and tree guides, 34 columns and more
    under the tree) cut so that the words keep ``MIN_NOTE_WIDTH`` columns."""
    (indent, style), *words = note
    room = max(width - MIN_NOTE_WIDTH, 0)
    if not words or len(indent) <= room:
        return note
    return [(indent[:room], style), *words]


# --- shared parts ---------------------------------------------------------------------------


def headline(document: Document, text: str, changes: Sequence[Change]) -> None:
    """Where the time went, first thing under the header (yellow when it is a slowdown)."""
    slower = any(c.kind == "duration" and (c.delta_ms or 0) > 0 for c in changes)
    document.note((document.text(text), "bold yellow" if slower else "bold"))


def tree_prefixes(document: Document, nodes: Sequence[Node]) -> Iterator[tuple[str, str, str]]:
    """(guides, connector, guides for lines below) per node of a pre-order list."""
    glyphs = document.glyphs
    last_child = {node.parent: node.id for node in nodes}
    below: dict[int, str] = {}
    for node in nodes:
        if node.parent is None:
            below[node.id] = ""
            yield "", "", ""
            continue
        inherited = below.get(node.parent, "")
        last = last_child[node.parent] == node.id
        mine = (inherited + ("   " if last else glyphs.pipe))[-3 * MAX_GUIDES :]
        below[node.id] = mine
        depth = f"[{node.depth}] " if node.depth > MAX_GUIDES else ""
        yield inherited, (glyphs.corner if last else glyphs.tee) + depth, mine


def changes_section(document: Document, changes: Sequence[Change]) -> None:
    """Every change, one line each, with its category."""
    if not changes:
        return
    document.row(("", ""))
    document.row((f"changes ({len(changes)}):", "bold"))
    for change in changes:
        style = "red" if change.category == "errors" else ""
        document.note(("  ", ""), (f"{change.category:<10} ", "dim"),
                      (document.text(change.message), style))  # fmt: skip


def attribution_section(
    document: Document, parts: Sequence[Share], nodes: dict[int, Node], total_ns: float,
    what: str, gap: str,
) -> None:  # fmt: skip
    """The largest parts of the change, either sign, and that they add up."""
    if not parts:
        return
    document.row(("", ""))
    document.note((f"where the time went (critical path, adds up to {signed(total_ns)} {what}):",
                   "bold"))  # fmt: skip
    for part in parts[:MAX_ATTRIBUTION]:
        share = "" if part.share is None else _percent(part.share)
        where = document.label(nodes[part.node]) if part.node is not None else gap
        component = {"queue_wait": "queue wait", "critical": "on the path"}.get(part.component, "")
        style = "yellow" if part.delta_ns > 0 else "cyan"
        # a note: on a narrow terminal the node wraps under its figures instead of being cut
        document.note(("  ", ""), (f"{signed(part.delta_ns):>11}", style), (f" {share:>7}", ""),
                      (f"  {component:<11}  ", "dim"), (where, ""))  # fmt: skip
    if len(parts) > MAX_ATTRIBUTION:
        more = len(parts) - MAX_ATTRIBUTION
        noun = "part" if more == 1 else "parts"
        document.note((f"  ... {more} smaller {noun} (--format json lists them all)", "dim"))


def _percent(share: float) -> str:
    """``64.4%``; a share that rounds to nothing is ``0.0%`` whatever its sign ("-0.0%" reads
    as a figure gone wrong; the delta beside it says which way it went)."""
    shown = f"{share:.1%}"
    return "0.0%" if shown == "-0.0%" else shown


def footer(
    document: Document, warnings: Sequence[str], changes: Sequence[Change], fail_on: FailOn,
    *, too_few_below: int | None = None,
) -> None:  # fmt: skip
    """Warnings, then the result and the exit status it gives; ``too_few_below``: the requests
    a set needed and did not have, so that nothing could be tested (still exit 0: nothing was
    found, but the sets are not called alike)."""
    if warnings:
        document.row(("", ""))
        document.row(("warnings:", "bold"))
        for warning in warnings:
            document.note(("  ", ""), (document.text(warning), "yellow"))
    counted = reasons(changes, fail_on)
    document.row(("", ""))
    if counted:  # notes: the exit status at the end must not be cut off a narrow terminal
        document.note((f"result: different ({', '.join(counted)}): exit 1", "bold"))
    elif too_few_below is not None:
        said = f"result: too few requests to tell (--min-requests {too_few_below}): exit 0"
        document.note((said, "bold yellow"))
    else:
        document.note(("result: no difference that counts: exit 0", "bold green"))


# --- two requests ---------------------------------------------------------------------------

COLUMNS = 34  # marker, A, B and delta before the tree
UNTIMED = "untimed"  # in place of the times of a request a clock stepped back in
MAX_PAIR_ROWS = 200  # nodes drawn whatever changed; past that, the changed ones and their ancestors


def pair_document(diff: PairDiff, glyphs: Glyphs, fail_on: FailOn) -> Document:
    """The whole view of a pair comparison."""
    document = Document(glyphs, [], COLUMNS)
    for name, side in (("A", diff.a), ("B", diff.b)):
        document.note((f"{name} ", "bold"), (_title(side), "bold"),
                      (f"  {_timed_ms(side.duration_ns, side)}, start "
                       f"{format_time(side.start_unix_nano)}", "dim"))  # fmt: skip
    headline(document, diff.headline, diff.changes)
    document.row(("", ""))
    document.heading((f"  {'A':>9} {'B':>9} {'delta':>10}  node", "bold"))
    by_node: dict[int, list[Change]] = {}
    for change in diff.changes:
        if change.node is not None and change.kind not in ("added", "removed", "timing"):
            by_node.setdefault(change.node, []).append(change)
    drawn = drawn_nodes(diff.nodes)
    prefixes = tree_prefixes(document, [d.node for d in drawn])
    for d, (guides, connector, below) in zip(drawn, prefixes, strict=True):
        _pair_row(document, d, guides + connector, (diff.a, diff.b))
        for text, style in _pair_notes(document, d, by_node.get(d.node.id, [])):
            document.note((" " * COLUMNS + below + "  ", "dim"), (text, style))
    if len(drawn) < len(diff.nodes):
        hidden = len(diff.nodes) - len(drawn)
        document.note((f"  ... {hidden} unchanged nodes not drawn (--format json lists them all)",
                       "dim"))  # fmt: skip
    changes_section(document, diff.changes)
    attribution_section(document, diff.attribution, {d.node.id: d.node for d in diff.nodes},
                        diff.duration_delta_ns, "end to end", diff.gap)  # fmt: skip
    footer(document, diff.warnings, diff.changes, fail_on)
    return document


def drawn_nodes(nodes: list[NodeDiff]) -> list[NodeDiff]:
    """Every node of a tree that fits a screen or two; of a larger one (a batch job of 10,000
    spans), the roots, the nodes that differ and those above them, which the unchanged rows
    would bury."""
    if len(nodes) <= MAX_PAIR_ROWS:
        return nodes
    parents = {d.node.id: d.node.parent for d in nodes}
    kept: set[int] = set()
    for d in nodes:
        n = d.node.id if d.status != "same" or d.node.parent is None else None
        while n is not None and n not in kept:
            kept.add(n)
            n = parents[n]
    drawn = [d for d in nodes if d.node.id in kept]
    return drawn if len(drawn) <= MAX_PAIR_ROWS else _deep_context_left_out(drawn)


def _deep_context_left_out(drawn: list[NodeDiff]) -> list[NodeDiff]:
    """Of a tree whose changed nodes alone have too many nodes above them (one call at the
    bottom of a recursion 10,000 deep), the unchanged ones deeper than the guides go too: each
    node drawn hangs from its nearest ancestor drawn, and its depth, in brackets there, says
    how far below it is."""
    nearest: dict[int, int | None] = {}  # node -> the nearest drawn one at or above it
    out = []
    for d in drawn:  # parents first
        parent = d.node.parent
        above = None if parent is None else nearest[parent]
        shown = d.status != "same" or d.node.depth <= MAX_GUIDES
        nearest[d.node.id] = d.node.id if shown else above
        if shown:
            out.append(d if above == parent else replace(d, node=replace(d.node, parent=above)))
    return out


def _title(side: Side) -> str:
    """The ID as typed, with the request's correlation ID when that is another (a trace ID was
    typed): two trace IDs of one session's ID would otherwise read the same."""
    typed = one_line(side.query, 80)
    if side.correlation_id is None or side.correlation_id == side.query:
        return typed
    return f"{typed} (correlation ID {one_line(side.correlation_id, 80)})"


def _pair_row(document: Document, d: NodeDiff, prefix: str, sides: tuple[Side, Side]) -> None:
    """A node's row: its marker, A, B and the delta, its guides and its label; narrower than
    those columns, its marker and label, then A, B and the delta in words, without guides
    (those a note can keep are cut at different depths, and read as another tree)."""
    a = d.a.duration_ns if d.a is not None else None
    b = d.b.duration_ns if d.b is not None else None
    delta = (b or 0) - (a or 0)
    row_style = ROW_STYLES[d.status]
    marker = (f"{MARKERS[d.status]} ", f"bold {row_style or 'yellow'}")
    figures = (_timed_ms(a, sides[0]), _timed_ms(b, sides[1]))
    delta_piece = (
        signed(delta) if sides[0].timed and sides[1].timed else "-",
        (row_style or ("yellow" if delta > 0 else "cyan")) if d.status == "changed" else row_style,
    )
    label = (document.label(d.node), row_style)
    in_words: list[Line] = [
        [("", ""), marker, label],
        [("  ", ""), (f"A {figures[0]}, B {figures[1]}, delta ", row_style), delta_piece],
    ]
    document.tree_row(
        marker,
        (f"{figures[0]:>9} {figures[1]:>9} ", row_style),
        (f"{delta_piece[0]:>10}", delta_piece[1]),
        (f"  {prefix}", "dim"),
        label,
        narrow=in_words,
    )


def _ms(ns: float | None) -> str:
    return "-" if ns is None else duration(ns)


def _timed_ms(ns: float | None, side: Side) -> str:
    """``_ms``, but for a request a clock stepped back in, whose times are unknown: a span
    kept lasting 0 ms would read 0 ms, and its calls' times as a change."""
    return _ms(ns) if side.timed or ns is None else UNTIMED


def _pair_notes(document: Document, d: NodeDiff, changes: list[Change]) -> Iterator[Piece]:
    """What changed at a node, in short: timings, calls, retries, errors, order."""
    for name, attribute, words in TIMING_METRICS:
        if name in d.changed and d.a is not None and d.b is not None:
            old, new = getattr(d.a, attribute), getattr(d.b, attribute)
            style = "yellow" if new > old else "cyan"
            text = f"{words} {duration(old)} -> {duration(new)} ({signed(new - old)})"
            yield document.text(text), style
    label = d.node.label()
    for change in changes:
        text = change.message
        for prefix in (f"under {label}: ", f"{label}: "):
            text = text.removeprefix(prefix)
        text = text.replace(f" at {label}:", ":")
        style = "bold red" if change.kind == "new_error" else "yellow"
        yield document.text(text), style
