"""Hang span records into one tree: by parent id, across traces by link, orphans by time.

A request's spans come from several traces (a queue hop may start a new one) and some parents may
be missing (a service in the middle exported nothing). Every span still gets a place: a trace root
that links to known spans (a batch consumer), or a messaging root whose children do (a pull
consumer's "receive" over the "process" spans that link), hangs under the message it waited
for, the one that arrived last; a span whose parent is missing hangs under the smallest known
span of its trace that encloses it in time, else under its trace's root, else (a trace with no
root: a consumer under a polling span never exported) under the message its trace links to, with
a warning. The tree is built from recorded times, before any clock-skew adjustment (which needs
the tree).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

from tracekit import semconv
from tracekit.path.conventions import clock_stepped_back
from tracekit.path.model import (
    ATTACHED_AS_ORPHAN,
    ATTACHED_BY_LINK,
    ATTACHED_BY_PARENT,
    PathSpan,
)
from tracekit.records import SpanLink, SpanRecord

__all__ = [
    "MAX_ORPHAN_SCANS",
    "MAX_ORPHAN_WARNINGS",
    "Key",
    "arrival",
    "attach",
    "build_tree",
    "index_spans",
    "preorder",
    "would_cycle",
]

Key = tuple[str, str]

# Looking for an enclosing span scans the orphan's trace; past this many orphans in one trace the
# rest go straight under the trace root so a badly broken trace cannot make the engine quadratic.
MAX_ORPHAN_SCANS = 64
MAX_ORPHAN_WARNINGS = 20  # one per orphan, then a count


def index_spans(records: Iterable[SpanRecord], warnings: list[str]) -> dict[Key, PathSpan]:
    """One node per (trace id, span id); a duplicate export of the same span is dropped, and
    another span that reuses the id is too, with a warning.

    A span that ends before it starts (any ``SpanSource`` may hold one) is shown as lasting no
    time, with a warning: every duration in the path, and every time on the critical path,
    stays positive. The store keeps such a span ending when it starts, marked with how far its
    clock stepped back: it gets the same warning.
    """
    nodes: dict[Key, PathSpan] = {}
    clashes: list[SpanRecord] = []
    for record in records:
        key = (record.trace_id, record.span_id)
        if key in nodes:
            if _identity(record) != _identity(nodes[key].record):
                clashes.append(record)
            continue
        backwards = record.end_unix_nano < record.start_unix_nano or clock_stepped_back(record)
        if backwards:
            record = replace(record, end_unix_nano=record.start_unix_nano)
        nodes[key] = node = PathSpan(record, record.start_unix_nano, record.end_unix_nano)
        if backwards:
            warnings.append(f"{node.label()} ends before it starts: shown as lasting 0 ms")
    if clashes:
        warnings.append(_clash_warning(clashes, nodes))
    return nodes


def _identity(record: SpanRecord) -> tuple[object, ...]:
    """What tells two spans apart (a re-export of one span repeats all of it)."""
    return (record.parent_span_id, record.service, record.name, record.kind,
            record.start_unix_nano, max(record.start_unix_nano, record.end_unix_nano))  # fmt: skip


def _clash_warning(clashes: list[SpanRecord], nodes: dict[Key, PathSpan]) -> str:
    """Spans that reuse another span's id in its trace (Zipkin's shared client and server
    spans): only the first is shown, and the path says what it leaves out."""
    first = clashes[0]
    kept = nodes[(first.trace_id, first.span_id)]
    more = f" and {len(clashes) - 1} more" if len(clashes) > 1 else ""
    return (
        f"span id reused: {first.service} '{first.name}' ({first.kind}) has the id of "
        f"{kept.label()} ({kept.record.kind}); not shown{more}"
    )


def attach(child: PathSpan, parent: PathSpan, how: str) -> None:
    """Hang ``child`` under ``parent``."""
    child.parent = parent
    child.attached_by = how
    parent.children.append(child)


def would_cycle(child: PathSpan, parent: PathSpan) -> bool:
    """True when ``child`` is ``parent`` or one of its ancestors."""
    node: PathSpan | None = parent
    while node is not None:
        if node is child:
            return True
        node = node.parent
    return False


def build_tree(nodes: dict[Key, PathSpan], warnings: list[str]) -> list[PathSpan]:
    """Link every node to its parent and return the roots, earliest first."""
    orphans: list[PathSpan] = []
    # latest first, so a loop of parent ids is cut at its earliest span, whatever the input order
    latest_first = sorted(nodes.values(), key=_start_order, reverse=True)
    for node in latest_first:
        parent_id = node.record.parent_span_id
        parent = nodes.get((node.record.trace_id, parent_id)) if parent_id else None
        if parent is not None and would_cycle(node, parent):
            _break_cycle(node, warnings)
        elif parent is not None:
            attach(node, parent, ATTACHED_BY_PARENT)
        elif parent_id:
            orphans.append(node)
    # latest first again: when two trace roots link to each other (links are the exporter's
    # word), the later one hangs under the earlier and the request's entry stays on top
    for node in latest_first:
        if node.parent is None and not node.record.parent_span_id:
            _attach_by_link(node, nodes)
    _attach_orphans(orphans, nodes, warnings)
    return sorted((n for n in nodes.values() if n.parent is None), key=_start_order)


def _break_cycle(node: PathSpan, warnings: list[str]) -> None:
    """A parent id that closes a loop (corrupt or hostile export): the span becomes a root."""
    parent_id = node.record.parent_span_id
    warnings.append(
        f"parent cycle: {node.label()} is its own ancestor through parent {parent_id}; "
        "shown as a root"
    )


def _start_order(node: PathSpan) -> tuple[int, str]:
    return (node.start_unix_nano, node.record.span_id)


def _attach_by_link(node: PathSpan, nodes: dict[Key, PathSpan]) -> PathSpan | None:
    """A trace root that links to known spans (or a messaging root whose children do) hangs
    under the message it waited for, which is returned."""
    targets = [nodes.get((link.trace_id, link.span_id)) for link in _links_of_trace(node)]
    known = [t for t in targets if t is not None and t.record.trace_id != node.record.trace_id]
    for target in sorted(known, key=lambda t: arrival(t, node), reverse=True):
        if not would_cycle(node, target):
            attach(node, target, ATTACHED_BY_LINK)
            return target
    return None


def _links_of_trace(root: PathSpan) -> list[SpanLink]:
    """The root's links; without any, for a messaging root, those of its children in its trace:
    a pull consumer's "receive" root over the "process" spans that link to the messages it
    took. A job's root (not messaging) over such spans was running before the messages came,
    so they do not place it."""
    if root.record.links or not _is_messaging(root.record):
        return root.record.links
    trace_id = root.record.trace_id
    return [link for c in root.children if c.record.trace_id == trace_id for link in c.record.links]


def _is_messaging(record: SpanRecord) -> bool:
    return record.kind == "CONSUMER" or semconv.MESSAGING_SYSTEM in record.attributes


def arrival(sender: PathSpan, receiver: PathSpan) -> tuple[int, int]:
    """Sort key: which linked message ``receiver`` waited for (the largest key).

    A message arrives when its producer's span ends; one the receiver took before that call
    returned arrived when it was taken. A batch consumer starts once its last message is in, so
    the one that arrived last is what it waited for; among messages taken while still being
    published, the one published last.
    """
    return (min(sender.end_unix_nano, receiver.start_unix_nano), sender.start_unix_nano)


def _attach_orphans(
    orphans: list[PathSpan], nodes: dict[Key, PathSpan], warnings: list[str]
) -> None:
    by_trace: dict[str, list[PathSpan]] = {}
    for node in nodes.values():
        by_trace.setdefault(node.record.trace_id, []).append(node)
    # the roots stay the same while orphans are placed: found once per trace, not per orphan
    roots = {trace_id: _first_root(trace) for trace_id, trace in by_trace.items()}
    scans: dict[str, int] = {}
    notes: list[str] = []
    # how many spans here have each missing parent: one alone is where its trace enters
    children_of_missing = Counter((o.record.trace_id, o.record.parent_span_id) for o in orphans)
    for orphan in sorted(orphans, key=_start_order):
        trace_id = orphan.record.trace_id
        scans[trace_id] = scans.get(trace_id, 0) + 1
        scan = scans[trace_id] <= MAX_ORPHAN_SCANS
        scanned = by_trace[trace_id] if scan else []
        host = _enclosing(orphan, scanned) or roots[trace_id]
        missing = f"parent span missing for {orphan.label()}: parent {orphan.record.parent_span_id}"
        if host is None:
            # a consumer under a polling span never exported (it never ended): its message
            linked = _attach_by_link(orphan, nodes)
            if linked is not None:
                missing += f"; attached under {linked.label()}, the message it links to"
            elif children_of_missing[trace_id, orphan.record.parent_span_id] == 1:
                missing = _entered_from_outside(orphan)
            notes.append(missing)
            continue
        attach(orphan, host, ATTACHED_AS_ORPHAN)
        notes.append(f"{missing}; attached under {host.label()}")
    warnings.extend(_bounded_orphan_notes(notes))


def _entered_from_outside(entry: PathSpan) -> str:
    """The note on a span that stands at the top of its trace's part here, the only child of a
    span that is not: the request came from a caller whose spans are kept elsewhere (an API
    gateway, a mesh proxy, another team's collector), left out by its sampler (a service sampling
    less than the next one), or not received yet. Ordinary behind a gateway that traces, so said
    as what it is, not as a fault."""
    return (
        f"the trace began before {entry.label()}: its parent span"
        f" {entry.record.parent_span_id} is not here (a caller that keeps its spans elsewhere,"
        " such as a gateway or mesh proxy, a span its sampler left out, or one not received yet)"
    )


def _bounded_orphan_notes(notes: list[str]) -> list[str]:
    """The first ``MAX_ORPHAN_WARNINGS`` notes, then how many more: the 10,000 children of a
    span never exported must not bury the path under 10,000 warnings (``--format json`` still
    gives each span's parent id)."""
    if len(notes) <= MAX_ORPHAN_WARNINGS:
        return notes
    more = len(notes) - MAX_ORPHAN_WARNINGS
    return [*notes[:MAX_ORPHAN_WARNINGS], f"parent span missing for {more} more spans"]


def _enclosing(orphan: PathSpan, trace: list[PathSpan]) -> PathSpan | None:
    """The smallest span of ``trace`` enclosing the orphan in time, if any."""
    # its own subtree, gathered once: asking each enclosing span for its ancestors made a deep
    # chain (a recursion thousands of levels deep) quadratic in its depth for every orphan
    below = _subtree(orphan) if trace else set()
    enclosing = [
        n
        for n in trace
        if n.start_unix_nano <= orphan.start_unix_nano
        and n.end_unix_nano >= orphan.end_unix_nano
        and n not in below
    ]
    return min(enclosing, key=lambda n: n.end_unix_nano - n.start_unix_nano, default=None)


def _first_root(trace: list[PathSpan]) -> PathSpan | None:
    """The trace's earliest span that never had a parent (an orphan is none, placed or not)."""
    roots = [n for n in trace if n.parent is None and not n.record.parent_span_id]
    return min(roots, key=_start_order, default=None)


def _subtree(top: PathSpan) -> set[PathSpan]:
    """``top`` and every span below it (iteratively: paths run deep)."""
    found: set[PathSpan] = set()
    stack = [top]
    while stack:
        node = stack.pop()
        found.add(node)
        stack.extend(node.children)
    return found


def preorder(roots: list[PathSpan]) -> list[PathSpan]:
    """All nodes, parents before children, siblings (and roots) by start time; sets ``depth``.

    Iterative, so a 10,000-span chain does not hit the recursion limit.
    """
    ordered: list[PathSpan] = []
    stack = [(root, 0) for root in reversed(sorted(roots, key=_start_order))]
    while stack:
        node, depth = stack.pop()
        node.depth = depth
        ordered.append(node)
        node.children.sort(key=_start_order)
        stack.extend((child, depth + 1) for child in reversed(node.children))
    return ordered
