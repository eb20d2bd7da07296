"""Clock-skew adjustment between services.

Each service stamps its spans with its own clock. When a span in another service starts before
the span that caused it (or, for a synchronous call, ends after it), the clocks disagree: the
child's subtree is shifted, keeping its duration, so that it fits. Synchronous children are
centred inside their caller (the network time is split evenly, as Jaeger does); a consumer that
"started" before its producer is placed at the producer's end. Spans of the same service share a
clock and inherit their parent's shift, as do orphans (placed by their host's recorded times).
"""

from __future__ import annotations

from tracekit.path.model import ATTACHED_AS_ORPHAN, PathSpan

ASYNC_KINDS = ("PRODUCER", "CONSUMER")


def adjust_clock_skew(ordered: list[PathSpan], warnings: list[str]) -> None:
    """Shift spans in place (``ordered`` must list parents before children); warn per service."""
    shifts: dict[str, list[int]] = {}
    for node in ordered:
        parent = node.parent
        if parent is None:
            continue
        if parent.service == node.service or node.attached_by == ATTACHED_AS_ORPHAN:
            # same clock; or an orphan, placed by its host's recorded times: keep that relation
            _shift(node, parent.shift_ns)
            continue
        delta = _needed_shift(node, parent)
        if delta:
            _shift(node, delta)
            shifts.setdefault(node.service, []).append(delta)
    warnings.extend(_describe(service, deltas) for service, deltas in shifts.items())


def _shift(node: PathSpan, delta: int) -> None:
    node.shift_ns = delta
    node.start_unix_nano = node.record.start_unix_nano + delta
    node.end_unix_nano = node.record.end_unix_nano + delta


def _needed_shift(node: PathSpan, parent: PathSpan) -> int:
    """How far ``node`` must move to sit plausibly against ``parent`` (0 when it already does)."""
    start, end = node.record.start_unix_nano, node.record.end_unix_nano
    if node.record.kind in ASYNC_KINDS or parent.record.kind in ASYNC_KINDS:
        return parent.end_unix_nano - start if start < parent.start_unix_nano else 0
    if start >= parent.start_unix_nano and end <= parent.end_unix_nano:
        return 0
    slack = (parent.end_unix_nano - parent.start_unix_nano) - (end - start)
    return parent.start_unix_nano + max(slack, 0) // 2 - start


def _describe(service: str, deltas: list[int]) -> str:
    largest = max(deltas, key=abs)
    spans = "span" if len(deltas) == 1 else "spans"
    return (
        f"clock skew adjusted on {service}: shifted {largest / 1e6:+.1f} ms "
        f"({len(deltas)} {spans} and their children in the same service)"
    )
