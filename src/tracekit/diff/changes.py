"""The differences between two requests' nodes: structure, call counts and retries, errors, timing.

Each finder walks the merged tree (pre-order) once and says what it found in one sentence per
difference. Order and concurrency live in ``arrangement``, resources in ``resources``.
"""

from __future__ import annotations

from collections.abc import Iterator

from .model import ADDED, DURATION, REMOVED, Change
from .nodes import Measure, Node, error_shape
from .settings import ERRORS, RETRIES, STRUCTURE, TIMING, Thresholds
from .units import HTTP, MESSAGING
from .words import duration, signed, signed_pct

__all__ = [
    "TIMING_METRICS",
    "Measures",
    "call_changes",
    "changed_metrics",
    "duration_change",
    "error_changes",
    "retries",
    "structure_changes",
    "timing_changes",
]

Measures = dict[int, Measure]

# (name in the report, Measure field, words)
TIMING_METRICS = (
    ("self", "self_ns", "self time"),
    ("queue_wait", "queue_wait_ns", "queue wait"),
    ("critical", "critical_ns", "critical path"),
)


def structure_changes(
    nodes: list[Node], order: list[int], before: Measures, after: Measures
) -> Iterator[Change]:
    """Nodes only one request has: one change for each whose parent both have (or a root),
    which names the calls its HTTP client made following its redirects (a node of their own,
    only that request has too); a call that became a message between the same two services
    under the same caller (or a message that became a call) is one change, at the node B has."""
    added, removed = _tops(nodes, order, after, before), _tops(nodes, order, before, after)
    redirects = {**_fold_redirects(nodes, added, after), **_fold_redirects(nodes, removed, before)}
    replaced = _transport_swaps(nodes, removed, added)
    taken_over = set(replaced.values())
    for n in order:
        also = _redirected_to(nodes, n, redirects.get(n, []))
        if n in replaced:
            gone = replaced[n]
            message = _swap_message(nodes[gone], nodes[n], removed[gone], added[n])
            yield Change(ADDED, STRUCTURE, n, message + also, related=(gone,))
        elif n in added:
            message = f"{ADDED} {nodes[n].label()}{also}{_below(added[n])}"
            yield Change(ADDED, STRUCTURE, n, message)
        elif n in removed and n not in taken_over:
            message = f"{REMOVED} {nodes[n].label()}{also}{_below(removed[n])}"
            yield Change(REMOVED, STRUCTURE, n, message)


def _fold_redirects(
    nodes: list[Node], tops: dict[int, int], side: Measures
) -> dict[int, list[int]]:
    """Node -> the nodes beside it among ``tops`` whose every call its HTTP client made
    following that node's redirects (or theirs, for a chain); those are taken out of ``tops``,
    their nodes below counted as the first request's."""
    origin_of: dict[int, int] = {}
    for n in tops:
        found = side[n]
        origin = next(iter(found.redirected_from)) if len(found.redirected_from) == 1 else n
        beside = origin in tops and nodes[origin].parent == nodes[n].parent
        if found.redirects == found.calls and origin != n and beside:
            origin_of[n] = origin
    out: dict[int, list[int]] = {}
    for n in origin_of:
        first = n
        for _ in range(len(origin_of)):  # bounded: redirects that go round end nowhere
            first = origin_of.get(first, first)
        if first not in origin_of:
            out.setdefault(first, []).append(n)
            tops[first] += tops.pop(n)
    return out


def _redirected_to(nodes: list[Node], origin: int, followed: list[int]) -> str:
    """`` (redirected to GET /item/new)``, naming what the redirects reached (and its service,
    when another's: ``other: GET /done``)."""
    service = nodes[origin].key.service
    keys = [nodes[n].key for n in followed]
    names = [key.name if key.service == service else f"{key.service}: {key.name}" for key in keys]
    return f" (redirected to {', '.join(names)})" if names else ""


def _tops(nodes: list[Node], order: list[int], side: Measures, other: Measures) -> dict[int, int]:
    """The nodes ``side`` has and ``other`` has not, whose parent both have (or a root): each
    with the number of nodes below it."""
    return {
        n: _subtree_size(nodes, order, position) - 1
        for position, n in enumerate(order)
        if n in side and n not in other and (nodes[n].parent is None or nodes[n].parent in other)
    }


# the other way to reach a service: a call that became a message, or a message that became a call
_SWAPPED = {HTTP: MESSAGING, MESSAGING: HTTP}


def _transport_swaps(
    nodes: list[Node], removed: dict[int, int], added: dict[int, int]
) -> dict[int, int]:
    """Added node -> the removed node it took the place of: the same caller, under the same
    parent, reaching the same service, over HTTP in one request and through a queue in the
    other (paired in tree order)."""
    waiting: dict[tuple[int | None, str | None, str, str], list[int]] = {}
    for new in reversed(added):  # reversed: ``pop`` takes the first in tree order
        waiting.setdefault(_reach(nodes[new], nodes[new].key.kind), []).append(new)
    out: dict[int, int] = {}
    for gone in removed:
        node = nodes[gone]
        swapped = _SWAPPED.get(node.key.kind)
        candidates = waiting.get(_reach(node, swapped)) if swapped and node.sender else None
        if candidates:
            out[candidates.pop()] = gone
    return out


def _reach(node: Node, kind: str | None) -> tuple[int | None, str | None, str, str]:
    """Where a hop of ``kind`` like ``node`` hangs: its parent, sender and receiving service."""
    return (node.parent, node.sender, node.key.service, kind or "")


def _swap_message(gone: Node, new: Node, gone_below: int, new_below: int) -> str:
    """``gateway -> inventory: call GET /stock/{sku} became message stock.check``."""
    words = {HTTP: "call", MESSAGING: "message"}
    message = (f"{new.sender} -> {new.key.service}: {words[gone.key.kind]} {gone.key.name}"
               f" became {words[new.key.kind]} {new.key.name}")  # fmt: skip
    if gone_below or new_below:
        message += f" ({_count(gone_below)} below it before, {_count(new_below)} now)"
    return message


def _below(count: int) -> str:
    return f" with {_count(count)} below" if count else ""


def _count(nodes: int) -> str:
    return f"{nodes} node{'s' if nodes != 1 else ''}"


def _subtree_size(nodes: list[Node], order: list[int], position: int) -> int:
    depth = nodes[order[position]].depth
    end = position + 1
    while end < len(order) and nodes[order[end]].depth > depth:
        end += 1
    return end - position


def call_changes(
    nodes: list[Node], order: list[int], before: Measures, after: Measures
) -> Iterator[Change]:
    """Retries that came or went, and other changes in how often a node was called."""
    for n in order:
        a, b = before.get(n), after.get(n)
        label = nodes[n].label()
        if a is not None and b is not None and a.calls - a.retries != b.calls - b.retries:
            yield Change("calls", STRUCTURE, n, f"{label}: {a.calls} -> {b.calls} calls")
        if (a.retries if a else 0) != (b.retries if b else 0):
            yield Change("retries", RETRIES, n, f"{label}: {retries(b)} (A: {retries(a)})")


def retries(measure: Measure | None) -> str:
    if measure is None or not measure.retries:
        return "no retries"
    count = measure.retries
    return f"{count} retr{'y' if count == 1 else 'ies'} after {'; '.join(measure.retried_after)}"


def error_changes(
    nodes: list[Node], order: list[int], before: Measures, after: Measures
) -> Iterator[Change]:
    """Errors B has where A had none (or not that one), errors A had that B lost, and the same
    errors more or fewer times (a retry that no longer recovers, or now does). Messages that
    differ only in ids and large numbers are the same error (``nodes.error_shape``)."""
    for n in order:
        a, b = before.get(n), after.get(n)
        a_count, b_count = (a.errors if a else 0), (b.errors if b else 0)
        a_messages = a.error_messages if a is not None and a_count else []
        b_messages = b.error_messages if b is not None and b_count else []
        a_shapes, b_shapes = (
            {error_shape(m) for m in a_messages},
            {error_shape(m) for m in b_messages},
        )
        new = [m for m in b_messages if error_shape(m) not in a_shapes]
        gone = [m for m in a_messages if error_shape(m) not in b_shapes]
        label = nodes[n].label()
        if new:
            yield Change("new_error", ERRORS, n, f"new error at {label}: {'; '.join(new)}")
        if gone:
            yield Change("gone_error", ERRORS, n, f"error gone at {label}: {'; '.join(gone)}")
        if not new and not gone and a_count != b_count:
            kind, words = ("new_error", "more") if b_count > a_count else ("gone_error", "fewer")
            message = f"{words} errors at {label}: {a_count} -> {b_count} ({'; '.join(b_messages)})"
            yield Change(kind, ERRORS, n, message)


def changed_metrics(
    a: Measure | None, b: Measure | None, thresholds: Thresholds
) -> tuple[str, ...]:
    """The timing metrics of a node both requests have that changed beyond the thresholds."""
    if a is None or b is None:
        return ()
    return tuple(
        name
        for name, attribute, _ in TIMING_METRICS
        if thresholds.exceeded(getattr(a, attribute), getattr(b, attribute))
    )


def timing_changes(
    nodes: list[Node], changed: dict[int, tuple[str, ...]], before: Measures, after: Measures
) -> Iterator[Change]:
    """One change per node whose self time, queue wait or critical-path time moved."""
    for n, metrics in changed.items():
        if not metrics:
            continue
        a, b = before[n], after[n]
        parts, largest = [], 0
        for name, attribute, words in TIMING_METRICS:
            if name in metrics:
                old, new = getattr(a, attribute), getattr(b, attribute)
                parts.append(f"{words} {duration(old)} -> {duration(new)} ({signed(new - old)})")
                largest = max(largest, new - old, key=abs)
        message = f"{nodes[n].label()}: {', '.join(parts)}"
        yield Change("timing", TIMING, n, message, round(largest / 1e6, 3))


def duration_change(a_ns: float, b_ns: float, thresholds: Thresholds) -> Iterator[Change]:
    """The whole request's change in duration, when it is beyond the thresholds."""
    if not thresholds.exceeded(a_ns, b_ns):
        return
    delta = b_ns - a_ns
    pct = round(delta / a_ns * 100, 3) if a_ns else None
    message = (
        f"end to end {duration(a_ns)} -> {duration(b_ns)} "
        f"({signed(delta)}, {signed_pct(delta, a_ns)})"
    )
    yield Change(DURATION, TIMING, None, message, round(delta / 1e6, 3), pct)
