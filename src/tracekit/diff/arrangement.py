"""Order and concurrency: calls that swapped places, and calls that stopped (or started) running
side by side.

Siblings are compared by the first call of each, as its caller saw it (the client span of an
HTTP call, the publish of a message): one clock, so no skew. Two calls ran in parallel when they
overlapped by more than ``PARALLEL_SHARE`` of the shorter one; otherwise one ran after the other.
A concurrency change is reported with what it cost or saved: the overlap one request had and the
other lost, and only when that is at least ``--min-delta-ms``. Several calls of one node (a loop
over items) are checked the same way among themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise

from .model import Change
from .nodes import Measure, Node
from .settings import ORDER, Thresholds
from .words import signed

__all__ = [
    "AFTER",
    "BEFORE",
    "MAX_SIBLINGS",
    "PARALLEL",
    "PARALLELISED",
    "PARALLEL_SHARE",
    "SERIALISED",
    "Interval",
    "Measures",
    "arrangement_changes",
    "overlap_saved",
    "relation",
]

Interval = tuple[int, int]
Measures = dict[int, Measure]

PARALLEL_SHARE = 0.1
MAX_SIBLINGS = 50  # siblings compared pairwise per parent (a 10,000-way fan-out stays linear)
PARALLEL, BEFORE, AFTER = "parallel", "before", "after"
# how a concurrency change's message says which way it went
SERIALISED = "in parallel in A, one after another in B"
PARALLELISED = "one after another in A, in parallel in B"


def relation(x: Interval, y: Interval) -> str:
    """PARALLEL, or whether ``x`` ran BEFORE or AFTER ``y``."""
    overlap = min(x[1], y[1]) - max(x[0], y[0])
    shorter = min(x[1] - x[0], y[1] - y[0])
    if overlap > 0 and overlap > PARALLEL_SHARE * shorter:
        return PARALLEL
    return BEFORE if x[0] <= y[0] else AFTER


def overlap_saved(intervals: list[Interval]) -> int:
    """Time parallelism saved: the intervals' total length minus the length of their union."""
    total, covered, reach = 0, 0, None
    for start, end in sorted(intervals):
        total += end - start
        if reach is None or start >= reach:
            covered, reach = covered + end - start, end
        elif end > reach:
            covered, reach = covered + end - reach, end
    return total - covered


def arrangement_changes(
    nodes: list[Node], order: list[int], before: Measures, after: Measures, thresholds: Thresholds
) -> Iterator[Change]:
    """Order and concurrency changes among the children of each node, and within each node."""
    children: dict[int | None, list[int]] = {}
    for n in order:
        if n in before and n in after:
            children.setdefault(nodes[n].parent, []).append(n)
    for parent, kids in children.items():
        yield from _sibling_changes(nodes, parent, kids[:MAX_SIBLINGS], before, after, thresholds)
    for n in order:
        a, b = before.get(n), after.get(n)
        if a is not None and b is not None and min(a.calls, b.calls) >= 2:
            yield from _repeat_changes(nodes[n], a, b, thresholds)


def _first(measure: Measure) -> Interval:
    return min(measure.intervals)


def _sibling_changes(
    nodes: list[Node], parent: int | None, kids: list[int], before: Measures, after: Measures,
    thresholds: Thresholds,
) -> Iterator[Change]:  # fmt: skip
    swapped: list[tuple[int, int]] = []
    serialised: set[int] = set()
    parallelised: set[int] = set()
    for i, x in enumerate(kids):
        for y in kids[i + 1 :]:
            was = relation(_first(before[x]), _first(before[y]))
            now = relation(_first(after[x]), _first(after[y]))
            if {was, now} == {BEFORE, AFTER}:
                swapped.append((x, y) if now == BEFORE else (y, x))
            elif was == PARALLEL and now != PARALLEL:
                serialised.update((x, y))
            elif was != PARALLEL and now == PARALLEL:
                parallelised.update((x, y))
    where = f"under {nodes[parent].label()}: " if parent is not None else ""
    for first, second in swapped:
        message = f"{where}{nodes[first].label()} now runs before {nodes[second].label()}"
        yield Change("order", ORDER, parent, message, related=(first, second))
    for group, how in ((serialised, SERIALISED), (parallelised, PARALLELISED)):
        members = sorted(group, key=kids.index)
        cost = _saved(members, before) - _saved(members, after)
        if members and abs(cost) / 1e6 >= thresholds.min_delta_ms:
            labels = ", ".join(nodes[m].label() for m in members)
            message = f"{where}{labels} ran {how} ({signed(cost)})"
            yield Change("concurrency", ORDER, parent, message, round(cost / 1e6, 3),
                         related=tuple(members))  # fmt: skip


def _saved(members: list[int], measures: Measures) -> int:
    return overlap_saved([_first(measures[m]) for m in members])


def _repeat_changes(node: Node, a: Measure, b: Measure, thresholds: Thresholds) -> Iterator[Change]:
    was, now = _any_parallel(a.intervals), _any_parallel(b.intervals)
    cost = overlap_saved(a.intervals) - overlap_saved(b.intervals)
    if was != now and abs(cost) / 1e6 >= thresholds.min_delta_ms:
        how = SERIALISED if was else PARALLELISED
        message = f"{node.label()}: {a.calls} -> {b.calls} calls ran {how} ({signed(cost)})"
        yield Change("concurrency", ORDER, node.id, message, round(cost / 1e6, 3))


def _any_parallel(intervals: list[Interval]) -> bool:
    ordered = sorted(intervals)
    return any(relation(x, y) == PARALLEL for x, y in pairwise(ordered))
