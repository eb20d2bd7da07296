"""Two requests compared: ``compare_paths(a, b)`` on paths the engine reconstructed.

Both paths come clock-skew corrected (the engine's default); their warnings travel along, marked
A or B. The merged tree lists every node either request has, in pre-order, siblings by when they
started; each node says whether it was added, removed, changed or is the same.

A request with a span whose clock stepped back while it ran (kept lasting 0 ms) is not timed:
its structure, calls and errors are compared, its durations are not (no duration or timing
change, no attribution), and the headline says why.
"""

from __future__ import annotations

from itertools import chain

from tracekit.path import Path

from .arrangement import SERIALISED, arrangement_changes
from .attribution import Parts, gap_place, headline, moved_parts, shares
from .changes import (
    call_changes,
    changed_metrics,
    duration_change,
    error_changes,
    retries,
    structure_changes,
    timing_changes,
)
from .model import ADDED, CHANGED, REMOVED, SAME, Change, NodeDiff, PairDiff, Side
from .nodes import Measure, Node, NodeIndex, measure, timed
from .resources import resource_changes
from .settings import Thresholds
from .unrecorded import (
    entry_grafts,
    entry_note,
    grafts_onto,
    recorded_nothing_of,
    unreceived_entry,
    unrecorded_note,
    without_unrecorded,
)

__all__ = ["Measures", "compare_paths", "tree_order"]

Measures = dict[int, Measure]


def compare_paths(a: Path, b: Path, thresholds: Thresholds | None = None) -> PairDiff:
    """What differs between request ``a`` and request ``b``."""
    limits = thresholds or Thresholds()
    index = NodeIndex()
    missing_in_a, missing_in_b = recorded_nothing_of(a, b), recorded_nothing_of(b, a)
    without_entry = None if missing_in_a or missing_in_b else _measure_without_entry(a, b)
    if without_entry is not None:
        index, before, after, entry_missing = without_entry
    else:
        before, after = _measure_both(a, b, index, missing_in_a, missing_in_b)
    nodes = index.nodes
    order = tree_order(index, _first_starts(before, after))
    untimed = [name for name, path in (("A", a), ("B", b)) if not timed(path)]
    a_side, b_side = _side(a), _side(b)
    sides = (("A", missing_in_a), ("B", missing_in_b))
    unrecorded = [unrecorded_note(side, services) for side, services in sides if services]
    if without_entry is not None:
        unrecorded.append(entry_missing)
    timing = {n: () if untimed else _changed(before.get(n), after.get(n), limits, unrecorded)
              for n in order}  # fmt: skip
    whole = not untimed and not unrecorded
    changes = list(
        chain(
            duration_change(a_side.duration_ns, b_side.duration_ns, limits) if whole else (),
            without_unrecorded(
                structure_changes(nodes, order, before, after),
                nodes,
                missing_in_a,
                missing_in_b,
                tops_unrecorded=without_entry is not None,
            ),
            call_changes(nodes, order, before, after),
            error_changes(nodes, order, before, after),
            arrangement_changes(nodes, order, before, after, limits),
            timing_changes(nodes, timing, before, after),
            resource_changes(a, b),
        )
    )
    touched = _touched(changes)
    moved = moved_parts(nodes, order, _parts(before), _parts(after))
    parts = shares(order, *moved, b_side.duration_ns - a_side.duration_ns) if whole else []
    gap = gap_place((a, b))
    lead = _untimed_headline(untimed) if untimed else headline(
        nodes, parts, a_side.duration_ns, b_side.duration_ns, limits,
        notes=_notes(changes, before, after), gap=gap)  # fmt: skip
    if unrecorded and not untimed:
        lead = f"time not attributed: {'; '.join(unrecorded)}"
    return PairDiff(
        a=a_side,
        b=b_side,
        nodes=[_node_diff(nodes[n], before, after, touched, timing[n]) for n in order],
        changes=changes,
        attribution=parts,
        headline=lead,
        min_delta_ms=limits.min_delta_ms,
        min_delta_pct=limits.min_delta_pct,
        warnings=[
            *(f"{note}: its nodes are not counted as added or removed" for note in unrecorded),
            *(f"A: {w}" for w in a.warnings),
            *(f"B: {w}" for w in b.warnings),
        ],
        gap=gap,
    )


def _measure_both(
    a: Path, b: Path, index: NodeIndex, missing_in_a: list[str], missing_in_b: list[str]
) -> tuple[Measures, Measures]:
    """What ``a`` and ``b`` measured at each node; when one of them recorded nothing of some
    services the other did, the work both recorded is compared (``_measure_grafted``)."""
    if missing_in_a and not missing_in_b:
        after, before = _measure_grafted(b, a, index, missing_in_a)
        return before, after
    if missing_in_b and not missing_in_a:
        return _measure_grafted(a, b, index, missing_in_b)
    return measure(a, index), measure(b, index)


def _measure_without_entry(a: Path, b: Path) -> tuple[NodeIndex, Measures, Measures, str] | None:
    """Where one request has no entry span (``unreceived_entry``) and its top calls are found
    below the other's: both measured, those calls at those nodes; and what to say of it."""
    for side, partial, kept in (("B", b, a), ("A", a, b)):
        entry = unreceived_entry(partial, kept)
        if entry is None:
            continue
        index = NodeIndex()
        kept_measures = measure(kept, index)
        grafts = entry_grafts(index.nodes, partial)
        if not grafts:
            return None
        partial_measures = measure(partial, index, grafts)
        note = entry_note(side, entry)
        if side == "B":
            return index, kept_measures, partial_measures, note
        return index, partial_measures, kept_measures, note
    return None


def _measure_grafted(
    kept: Path, partial: Path, index: NodeIndex, left_out: list[str]
) -> tuple[Measures, Measures]:
    """``kept`` and ``partial`` measured, the top spans of ``partial`` at the nodes where the
    same work hangs in ``kept`` (``grafts_onto``); there ``kept`` counts its receiving side
    alone: the caller's span and the queue wait are what ``partial`` did not record."""
    measure(kept, index)  # its nodes, where the grafts are found
    grafts = grafts_onto(index.nodes, partial, left_out)
    return measure(kept, index, received_only=set(grafts.values())), measure(partial, index, grafts)


def _changed(
    a: Measure | None, b: Measure | None, limits: Thresholds, unrecorded: list[str]
) -> tuple[str, ...]:
    """The timing metrics that changed at a node; where a side recorded nothing of some
    services, not its share of the critical path, which runs through what the other side
    alone recorded (the consumer the request did not wait for is all a partial one is)."""
    changed = changed_metrics(a, b, limits)
    return tuple(name for name in changed if name != "critical") if unrecorded else changed


def tree_order(index: NodeIndex, starts: dict[int, int]) -> list[int]:
    """Node ids in pre-order, siblings by ``starts`` (offset of the first call), then by key."""
    children: dict[int | None, list[int]] = {}
    for node in index.nodes:
        children.setdefault(node.parent, []).append(node.id)

    def by_start(n: int) -> tuple[int, object]:
        return (starts.get(n, 0), index.nodes[n].key)

    out: list[int] = []
    stack = sorted(children.get(None, []), key=by_start, reverse=True)
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(sorted(children.get(n, []), key=by_start, reverse=True))
    return out


def _first_starts(*sides: Measures) -> dict[int, int]:
    """Each node's first start: from the first side that has it."""
    out: dict[int, int] = {}
    for measures in sides:
        for n, found in measures.items():
            out.setdefault(n, found.first_start_ns)
    return out


def _side(path: Path) -> Side:
    duration_ns = round(path.duration_ms * 1e6)
    if path.spans:  # exact, not through the rounded milliseconds
        end = max(span.end_unix_nano for span in path.spans)
        duration_ns = end - path.start_unix_nano
    return Side(path.query, path.correlation_id, tuple(path.trace_ids), path.start_unix_nano,
                duration_ns, tuple(path.warnings), timed(path))  # fmt: skip


def _untimed_headline(untimed: list[str]) -> str:
    sides = " and ".join(untimed)
    return (f"timing not compared: a clock stepped back while {sides} ran (a span kept lasting"
            " 0 ms), so how long it took is unknown")  # fmt: skip


def _parts(measures: Measures) -> Parts:
    return {n: (m.critical_ns, m.critical_wait_ns) for n, m in measures.items()}


def _notes(changes: list[Change], before: Measures, after: Measures) -> dict[int, str]:
    """A word for the headline on nodes that retried or stopped (or started) running in parallel."""
    out: dict[int, str] = {}
    for change in changes:
        if change.kind == "retries" and change.node is not None:
            out[change.node] = _retry_note(before.get(change.node), after.get(change.node))
        elif change.kind == "concurrency":
            serial = SERIALISED in change.message
            # siblings that moved, or the node itself when its own repeated calls did
            moved = change.related or ((change.node,) if change.node is not None else ())
            for n in moved:
                out[n] = "no longer in parallel" if serial else "now in parallel"
    return out


def _retry_note(a: Measure | None, b: Measure | None) -> str:
    """B's retries; or, where B has none, A's that went away (the time they no longer cost)."""
    if b is not None and b.retries:
        return retries(b)
    return f"{retries(a)} in A, none in B"


def _touched(changes: list[Change]) -> set[int]:
    """Nodes a change is about (order and concurrency: the nodes that moved, not the parent)."""
    out: set[int] = set()
    for change in changes:
        if change.related:
            out.update(change.related)
        elif change.node is not None:
            out.add(change.node)
    return out


def _node_diff(
    node: Node, before: Measures, after: Measures, touched: set[int], changed: tuple[str, ...]
) -> NodeDiff:
    status = _status(node.id, before, after, touched)
    return NodeDiff(node, status, before.get(node.id), after.get(node.id), changed)


def _status(n: int, before: Measures, after: Measures, touched: set[int]) -> str:
    if n not in before:
        return ADDED
    if n not in after:
        return REMOVED
    return CHANGED if n in touched else SAME
