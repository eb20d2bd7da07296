"""Where the time went: the end-to-end change split over nodes by critical-path time.

The critical path covers the request from its start to its end, queue waits included (issue 20),
so each request's per-node critical-path times add up to its duration; their changes add up to
the change in duration, across queue hops. Each node's change is split into queue wait and its
own time. What no node accounts for is kept as a part of its own so the parts always add up: the
time between traces that share a correlation ID but no link, or between the spans of a trace
whose parent was never exported (that span did the work, and nothing recorded it).

Work that moved is not work that came and went: a call that B makes through an extra hop (a
proxy in front of inventory), or under a span renamed, is a node only B has (its chain of
ancestors changed), and its counterpart a node only A has. Counted apart, the call's whole time
is a part gained and a part lost, and the headline named the moved call as where the change went
(300% of +30 ms in ``proxy -> inventory``, unchanged at 90 ms, for a proxy's 30 ms). Such nodes
of one key (service, name, kind) are one part (``moved_parts``): the time they gained or lost.
"""

from __future__ import annotations

from collections.abc import Iterable

from tracekit.path import Path

from .model import BETWEEN_TRACES, CRITICAL, QUEUE_WAIT, UNEXPORTED_PARENT, Share
from .nodes import Node
from .settings import Thresholds
from .units import NodeKey
from .words import signed, signed_pct

__all__ = [
    "BETWEEN_TRACES",
    "GAP",
    "HEADLINE_COVERS",
    "HEADLINE_PARTS",
    "UNEXPORTED_PARENT",
    "Parts",
    "gap_place",
    "headline",
    "moved_parts",
    "shares",
]

GAP = "gap"  # the component of the part no node accounts for
HEADLINE_COVERS = 0.8  # the headline names parts until they explain this much of the change
HEADLINE_PARTS = 3

Parts = dict[int, tuple[float, float]]  # node -> (critical-path time, its queue-wait part), ns


def moved_parts(
    nodes: list[Node], order: list[int], before: Parts, after: Parts
) -> tuple[Parts, Parts]:
    """``before`` and ``after`` with each node only A has given to the first node (in ``order``)
    only B has of its key, where there is one: a moved call's part is its change, not its
    whole time twice over. The parts still add up to the same."""
    gained: dict[NodeKey, int] = {}
    for n in order:
        if n in after and n not in before:
            gained.setdefault(nodes[n].key, n)
    moved: Parts = {}
    for n, (critical, wait) in before.items():
        owner = gained.get(nodes[n].key, n) if n not in after else n
        kept_critical, kept_wait = moved.get(owner, (0, 0))
        moved[owner] = (kept_critical + critical, kept_wait + wait)
    return moved, after


def shares(order: list[int], before: Parts, after: Parts, total_ns: float) -> list[Share]:
    """Every non-zero part of ``total_ns``, the largest first whichever its sign: a view that
    lists the first few hides only parts smaller than those it shows."""
    out: list[Share] = []
    for n in order:
        critical_a, wait_a = before.get(n, (0, 0))
        critical_b, wait_b = after.get(n, (0, 0))
        wait = wait_b - wait_a
        own = (critical_b - wait_b) - (critical_a - wait_a)
        out += [_share(n, QUEUE_WAIT, wait, total_ns), _share(n, CRITICAL, own, total_ns)]
    rest = total_ns - sum(s.delta_ns for s in out)
    if abs(rest) >= 1:  # a nanosecond: less is float rounding of means
        out.append(_share(None, GAP, rest, total_ns))
    position: dict[int | None, int] = {n: i for i, n in enumerate(order)}
    kept = [s for s in out if s.delta_ns]
    return sorted(kept, key=lambda s: (-abs(s.delta_ns), position.get(s.node, -1), s.component))


def gap_place(paths: Iterable[Path]) -> str:
    """Where the time no node accounts for lies in ``paths``: between separate traces, under a
    parent span that was never exported (the roots of a trace that did not come), or either."""
    separate = unexported = False
    for path in paths:
        roots = [span for span in path.spans if span.parent is None]
        separate = separate or len({span.record.trace_id for span in roots}) > 1
        unexported = unexported or any(span.record.parent_span_id for span in roots)
    if unexported:
        return f"{UNEXPORTED_PARENT}, or {BETWEEN_TRACES}" if separate else UNEXPORTED_PARENT
    return BETWEEN_TRACES


def _share(node: int | None, component: str, delta: float, total: float) -> Share:
    return Share(node, component, delta, delta / total if total else None)


def headline(
    nodes: list[Node], parts: list[Share], a_ns: float, b_ns: float, thresholds: Thresholds,
    what: str = "end to end", notes: dict[int, str] | None = None, gap: str = BETWEEN_TRACES,
) -> str:  # fmt: skip
    """``+412.0 ms end to end (+343%): 95% queue wait on orders.created``.

    ``notes`` add a word on a node named (``1 retry after HTTP 503``); ``gap`` says where the
    part no node accounts for lies (``gap_place``).
    """
    delta = b_ns - a_ns
    if not thresholds.exceeded(a_ns, b_ns):
        return (
            f"{signed(delta)} {what}: no timing difference above "
            f"{thresholds.min_delta_ms:g} ms and {thresholds.min_delta_pct:g}%"
        )
    named: list[str] = []
    covered = 0.0
    for part in parts:
        if len(named) == HEADLINE_PARTS or covered >= HEADLINE_COVERS:
            break
        if part.share is None or part.share <= 0:
            continue  # a part against the change: the headline says where the time went
        note = (notes or {}).get(part.node) if part.node is not None else None
        where = gap if part.node is None else _where(nodes[part.node], part.component)
        named.append(f"{part.share:.0%} {where}" + (f" ({note})" if note else ""))
        covered += part.share
    head = f"{signed(delta)} {what} ({signed_pct(delta, a_ns)})"
    return f"{head}: {', '.join(named)}" if named else head


def _where(node: Node, component: str) -> str:
    if component == QUEUE_WAIT:
        return f"queue wait on {node.key.name}"
    return f"in {node.label()}"
