"""The results a diff returns: plain records the CLI renders and ``report`` turns into JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .nodes import Measure, Node
from .settings import CATEGORIES, SLOWER, FailOn

__all__ = [
    "ADDED",
    "BETWEEN_TRACES",
    "CHANGED",
    "CRITICAL",
    "DURATION",
    "QUEUE_WAIT",
    "REMOVED",
    "SAME",
    "UNEXPORTED_PARENT",
    "Change",
    "NodeDiff",
    "PairDiff",
    "Share",
    "Side",
    "reasons",
]

SAME, CHANGED, ADDED, REMOVED = "same", "changed", "added", "removed"
DURATION = "duration"  # the kind of the end-to-end timing change
QUEUE_WAIT = "queue_wait"  # attribution components: time waiting in a queue on the path...
CRITICAL = "critical"  # ... and the node's own time on the path
# where the part of the change no node accounts for lies: no span shown covers it
BETWEEN_TRACES = "between traces joined only by correlation ID"
UNEXPORTED_PARENT = "under a parent span never exported"


@dataclass(frozen=True, slots=True)
class Change:
    """One difference, in words, with the category ``--fail-on`` knows it by."""

    kind: str  # added, removed, calls, retries, new_error, gone_error, order, concurrency,
    # timing, duration, frequency, error_rate, resource
    category: str
    node: int | None
    message: str
    delta_ms: float | None = None
    pct: float | None = None  # delta relative to A, in percent (None when A was 0)
    related: tuple[int, ...] = ()  # other nodes involved (order and concurrency)


@dataclass(frozen=True, slots=True)
class Share:
    """One node's part of the end-to-end change: its queue wait or own time on the path."""

    node: int | None  # None: time on no span (between traces, under a parent never exported)
    component: str  # QUEUE_WAIT or CRITICAL
    delta_ns: float
    share: float | None  # of the end-to-end change (None when that is 0)


@dataclass(frozen=True, slots=True)
class Side:
    """One of the two requests compared."""

    query: str
    correlation_id: str | None
    trace_ids: tuple[str, ...]
    start_unix_nano: int
    duration_ns: int
    warnings: tuple[str, ...]
    timed: bool = True  # False: a clock stepped back while it ran, so its times are unknown


@dataclass(frozen=True, slots=True)
class NodeDiff:
    """A node of the merged tree with what each request measured there."""

    node: Node
    status: str  # SAME, CHANGED, ADDED or REMOVED
    a: Measure | None
    b: Measure | None
    changed: tuple[str, ...] = ()  # the timing metrics that changed beyond the thresholds


@dataclass(slots=True)
class PairDiff:
    """What differs between two requests."""

    a: Side
    b: Side
    nodes: list[NodeDiff]  # the merged tree in pre-order
    changes: list[Change]
    attribution: list[Share]  # largest part of the change first
    headline: str
    min_delta_ms: float
    min_delta_pct: float
    warnings: list[str] = field(default_factory=list)
    gap: str = BETWEEN_TRACES  # where the part no node accounts for lies

    @property
    def duration_delta_ns(self) -> int:
        """B's duration minus A's."""
        return self.b.duration_ns - self.a.duration_ns


def reasons(changes: Sequence[Change], fail_on: FailOn) -> list[str]:
    """The ``--fail-on`` categories the changes fall in, in ``CATEGORIES`` order then ``slower``
    (empty: no difference that counts)."""
    found = {c.category for c in changes if c.category in fail_on.categories}
    slower = fail_on.slower and any(_slow_enough(c, fail_on) for c in changes)
    return [name for name in CATEGORIES if name in found] + ([SLOWER] if slower else [])


def _slow_enough(change: Change, fail_on: FailOn) -> bool:
    if change.kind != DURATION or change.delta_ms is None or change.delta_ms <= 0:
        return False
    pct_ok = change.pct is None or change.pct >= fail_on.slower_pct
    return pct_ok and change.delta_ms >= fail_on.slower_ms
