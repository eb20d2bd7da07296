"""Two sets of requests compared (version 1.4 against 1.5): ``compare_sets(a_paths, b_paths)``.

Per node, each a test fit for its data:

- how often it appears (share of requests) and its error rate (share of the requests that reach
  it in which it failed): Fisher's exact test, honest on zero-heavy counts;
- calls per request (retries aside: a retry is one more attempt, not one more call, as in the
  pair form), retries per request (calls repeated after a failed attempt, as the pair form
  counts them), self time and critical-path time (among the requests that reach it) and
  the end-to-end duration: Mann-Whitney U, which assumes nothing of the skewed, tied
  distributions that durations and counts have.

Every p-value of the comparison is corrected together (Holm), so ``alpha`` bounds the chance of
reporting anything at all when nothing changed. A metric needs ``min_requests`` requests on each
side, else it is "too few to tell"; one a side never reaches is not tested (the frequency test
says it came or went). A significant timing change must also pass the thresholds.

Nodes are ranked by their contribution to the change in mean duration: the change in their mean
critical-path time per request (over all requests, zero where absent). As in the pair form, the
contributions add up to the change in mean duration.

A request with a span whose clock stepped back while it ran (kept lasting 0 ms, with
``tracekit.clock_stepped_back_ns``) is counted (how often, how many calls, errors, retries) but
not timed, as ``tracekit canary`` does: how long it took is unknown, not zero, and 0 ms would make
its set look faster than it is. A warning says how many there were.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from tracekit.path import Path

from .attribution import BETWEEN_TRACES, Parts, gap_place, headline, moved_parts, shares
from .model import ADDED, CHANGED, REMOVED, SAME, Change, Share
from .nodes import Measure, Node, NodeIndex, measure, timed
from .pair import tree_order
from .set_tests import TOO_FEW, Test, run_tests
from .settings import ERRORS, RETRIES, STRUCTURE, TIMING, Thresholds
from .words import signed, signed_pct

__all__ = [
    "REPORTED",
    "TOO_FEW",
    "SetDiff",
    "SetMeasure",
    "SetNode",
    "SetSettings",
    "SetSide",
    "compare_sets",
]


# The --fail-on categories the set form can report: it tests no order or concurrency, and the
# resources of two sets differ by what selected them
REPORTED = (STRUCTURE, RETRIES, ERRORS, TIMING)


@dataclass(frozen=True, slots=True)
class SetSettings:
    """How sure and how large a change must be to be reported."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    min_requests: int = 20
    alpha: float = 0.05


@dataclass(frozen=True, slots=True)
class SetSide:
    """One set of requests: what selected it and how long its timed requests took."""

    label: str
    requests: int
    mean_ns: float
    median_ns: float
    untimed: int = 0  # requests a clock stepped back in: counted, not timed

    @property
    def timed(self) -> bool:
        """Whether any of its requests was timed: else how long they took is unknown (its
        mean and median read 0)."""
        return self.untimed < self.requests or not self.requests


@dataclass(slots=True)
class SetMeasure:
    """One node over one set: how often, how many calls, how often failing, how long."""

    requests: int  # requests that reach the node
    frequency: float  # ... as a share of the set
    calls: list[int] = field(default_factory=list, repr=False)  # per request reaching it
    retries: list[int] = field(default_factory=list, repr=False)  # ... of those calls, retries
    failed: int = 0  # requests in which it failed
    self_ns: list[int] = field(default_factory=list, repr=False)  # per timed request reaching it
    critical_ns: list[int] = field(default_factory=list, repr=False)  # ... likewise
    contribution_ns: float = 0.0  # mean critical-path time over every timed request of the set
    contribution_wait_ns: float = 0.0  # its queue-wait part
    first_start_ns: int = 0

    @property
    def calls_per_request(self) -> float:
        """Mean calls among the requests that reach the node."""
        return statistics.fmean(self.calls) if self.calls else 0.0

    @property
    def asked(self) -> list[int]:
        """Calls per request reaching the node, retries aside: the calls the code made."""
        return [calls - retries for calls, retries in zip(self.calls, self.retries, strict=True)]

    @property
    def retries_per_request(self) -> float:
        """Mean retries among the requests that reach the node."""
        return statistics.fmean(self.retries) if self.retries else 0.0

    @property
    def error_rate(self) -> float:
        """Share of the requests reaching the node in which it failed."""
        return self.failed / self.requests if self.requests else 0.0

    @property
    def mean_self_ns(self) -> float:
        """Mean self time among the requests that reach the node."""
        return statistics.fmean(self.self_ns) if self.self_ns else 0.0

    @property
    def mean_critical_ns(self) -> float:
        """Mean critical-path time among the requests that reach the node."""
        return statistics.fmean(self.critical_ns) if self.critical_ns else 0.0


@dataclass(frozen=True, slots=True)
class SetNode:
    """A node of the merged tree with both sets' measures and the tests that compared them."""

    node: Node
    status: str  # SAME, CHANGED, ADDED, REMOVED or TOO_FEW
    a: SetMeasure | None
    b: SetMeasure | None
    tests: tuple[Test, ...]
    contribution_ns: float  # B's contribution minus A's


@dataclass(slots=True)
class SetDiff:
    """What differs between two sets of requests."""

    a: SetSide
    b: SetSide
    nodes: list[SetNode]  # ranked: largest contribution to the change in mean duration first
    duration_test: Test
    changes: list[Change]
    attribution: list[Share]
    headline: str
    settings: SetSettings
    warnings: list[str] = field(default_factory=list)
    gap: str = BETWEEN_TRACES  # where the part no node accounts for lies


def compare_sets(
    a_paths: Sequence[Path], b_paths: Sequence[Path], settings: SetSettings | None = None,
    labels: tuple[str, str] = ("A", "B"),
) -> SetDiff:  # fmt: skip
    """What differs between the requests ``a_paths`` and the requests ``b_paths``."""
    chosen = settings or SetSettings()
    index = NodeIndex()
    # each request looked at once for a stepped clock: measured and timed by the same answer
    timed_a, timed_b = ([timed(path) for path in paths] for paths in (a_paths, b_paths))
    before, after = _measures(a_paths, timed_a, index), _measures(b_paths, timed_b, index)
    durations = (_durations(a_paths, timed_a), _durations(b_paths, timed_b))
    sizes = (_requests(a_paths), _requests(b_paths))
    tested = run_tests(index.nodes, before, after, durations, sizes, chosen)
    order = tree_order(index, {**{n: m.first_start_ns for n, m in after.items()},
                               **{n: m.first_start_ns for n, m in before.items()}})  # fmt: skip
    mean_a, mean_b = (statistics.fmean(d) if d else 0.0 for d in durations)
    a_side, b_side = (_side(*side) for side in zip(labels, durations, sizes, strict=True))
    untimed = [name for name, side in (("A", a_side), ("B", b_side)) if not side.timed]
    gap = gap_place([*a_paths, *b_paths])
    moved = moved_parts(index.nodes, order, _parts(before), _parts(after))
    parts = [] if untimed else shares(order, *moved, mean_b - mean_a)
    nodes = [_set_node(index.nodes[n], before.get(n), after.get(n), tested.tests.get(n, ()),
                       timed=not untimed) for n in order]  # fmt: skip
    nodes.sort(key=lambda s: -abs(s.contribution_ns))  # stable: ties keep tree order
    rank = {s.node.id: i for i, s in enumerate(nodes)}
    changes = sorted(tested.changes, key=lambda c: -1 if c.node is None else rank[c.node])
    lead = _untimed_headline(untimed) if untimed else _headline(
        index.nodes, parts, mean_a, mean_b, tested.duration, chosen, gap)  # fmt: skip
    return SetDiff(
        a=a_side,
        b=b_side,
        nodes=nodes,
        duration_test=tested.duration,
        changes=changes,
        attribution=parts,
        headline=lead,
        settings=chosen,
        warnings=[
            *_too_few_warnings(sizes, labels, chosen.min_requests),
            *_untimed_warnings(durations, sizes, labels),
        ],
        gap=gap,
    )


def _measures(
    paths: Sequence[Path], timed_ones: list[bool], index: NodeIndex
) -> dict[int, SetMeasure]:
    gathered: dict[int, list[Measure]] = {}
    gathered_timed: dict[int, list[Measure]] = {}
    for path, is_timed in zip(paths, timed_ones, strict=True):
        for n, found in measure(path, index).items():
            gathered.setdefault(n, []).append(found)
            if is_timed:
                gathered_timed.setdefault(n, []).append(found)
    total, timed_total = len(paths), sum(timed_ones)
    return {n: _summarise(found, gathered_timed.get(n, []), total, timed_total)
            for n, found in gathered.items()}  # fmt: skip


def _summarise(
    found: list[Measure], timed: list[Measure], total: int, timed_total: int
) -> SetMeasure:
    per_timed_request = max(timed_total, 1)
    return SetMeasure(
        requests=len(found),
        frequency=len(found) / total,
        calls=[m.calls for m in found],
        retries=[m.retries for m in found],
        failed=sum(1 for m in found if m.errors),
        self_ns=[m.self_ns for m in timed],
        critical_ns=[m.critical_ns for m in timed],
        contribution_ns=sum(m.critical_ns for m in timed) / per_timed_request,
        contribution_wait_ns=sum(m.critical_wait_ns for m in timed) / per_timed_request,
        first_start_ns=min(m.first_start_ns for m in found),
    )


def _requests(paths: Sequence[Path]) -> int:
    return sum(1 for path in paths if path.spans)


def _durations(paths: Sequence[Path], timed_ones: list[bool]) -> list[float]:
    """The timed requests' end-to-end durations."""
    return [
        float(max(s.end_unix_nano for s in p.spans) - p.start_unix_nano)
        for p, is_timed in zip(paths, timed_ones, strict=True)
        if is_timed
    ]


def _parts(measures: dict[int, SetMeasure]) -> Parts:
    return {n: (m.contribution_ns, m.contribution_wait_ns) for n, m in measures.items()}


def _side(label: str, durations: list[float], requests: int) -> SetSide:
    untimed = requests - len(durations)
    if not durations:
        return SetSide(label, requests, 0.0, 0.0, untimed)
    mean, median = statistics.fmean(durations), statistics.median(durations)
    return SetSide(label, requests, mean, median, untimed)


def _set_node(
    node: Node, a: SetMeasure | None, b: SetMeasure | None, tests: tuple[Test, ...], *,
    timed: bool,
) -> SetNode:  # fmt: skip
    """``timed``: both sets have a timed request (else a contribution would be 0 ms taken
    for the time of a set none of whose requests was timed)."""
    contribution = (b.contribution_ns if b else 0.0) - (a.contribution_ns if a else 0.0)
    if not timed:
        contribution = 0.0
    return SetNode(node, _status(a, b, tests), a, b, tests, contribution)


def _status(a: SetMeasure | None, b: SetMeasure | None, tests: tuple[Test, ...]) -> str:
    verdicts = {t.verdict for t in tests}
    if CHANGED in verdicts:
        if a is None:
            return ADDED
        return REMOVED if b is None else CHANGED
    return TOO_FEW if TOO_FEW in verdicts else SAME


def _headline(
    nodes: list[Node], parts: list[Share], mean_a: float, mean_b: float, duration: Test,
    settings: SetSettings, gap: str,
) -> str:  # fmt: skip
    if duration.verdict == TOO_FEW:
        return f"too few requests to tell: at least {settings.min_requests} needed in each set"
    if duration.verdict != CHANGED:
        delta = mean_b - mean_a
        return (
            f"{signed(delta)} mean ({signed_pct(delta, mean_a)}): {_unchanged(duration, settings)}"
        )
    return headline(nodes, parts, mean_a, mean_b, settings.thresholds, "mean", gap=gap)


def _untimed_headline(untimed: list[str]) -> str:
    sides = " and ".join(untimed)
    return (f"timing not compared: a clock stepped back in every request of {sides} (a span kept"
            " lasting 0 ms), so how long they took is unknown")  # fmt: skip


def _unchanged(duration: Test, settings: SetSettings) -> str:
    """Why a duration change is not reported: chance, or (significant all the same, as a
    steady 1 ms on hundreds of requests is) too small to count."""
    p = 1.0 if duration.p_adjusted is None else duration.p_adjusted
    if p < settings.alpha:
        limits = settings.thresholds
        why = f"no timing difference above {limits.min_delta_ms:g} ms and {limits.min_delta_pct:g}%"
    else:
        why = "not a significant change in duration"
    return f"{why} (p={p:.2g} after correction)"


def _too_few_warnings(sizes: tuple[int, int], labels: tuple[str, str], needed: int) -> list[str]:
    return [
        f"set {name} ({label}) has {found} request{'s' if found != 1 else ''}, fewer "
        f"than the {needed} needed (--min-requests): too few to tell"
        for name, label, found in zip("AB", labels, sizes, strict=True)
        if found < needed
    ]


def _untimed_warnings(
    durations: tuple[list[float], list[float]], sizes: tuple[int, int], labels: tuple[str, str]
) -> list[str]:
    return [
        f"set {name} ({label}): {size - len(timed)} of its {size} requests ran while a clock "
        "stepped back (a span kept lasting 0 ms): counted, not timed"
        for name, label, timed, size in zip("AB", labels, durations, sizes, strict=True)
        if size > len(timed)
    ]
