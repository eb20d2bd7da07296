"""The tests of the set form, run together and corrected together (Holm)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .model import ADDED, CHANGED, DURATION, REMOVED, SAME, Change
from .nodes import Node
from .settings import ERRORS, RETRIES, STRUCTURE, TIMING
from .stats import fisher_exact, holm, mann_whitney
from .words import duration, signed, signed_pct

if TYPE_CHECKING:
    from .sets import SetMeasure, SetSettings

__all__ = [
    "CALLS",
    "CRITICAL",
    "ERROR_RATE",
    "FISHER",
    "FREQUENCY",
    "MANN_WHITNEY",
    "METRICS",
    "RETRIED",
    "SELF",
    "TIMED",
    "TOO_FEW",
    "UNTESTED",
    "Test",
    "Tested",
    "run_tests",
]

FREQUENCY, CALLS, ERROR_RATE = "frequency", "calls", "error_rate"
RETRIED = "retries"  # retries per request: what --fail-on retries gates on, as in the pair form
SELF, CRITICAL = "self", "critical"
METRICS = (FREQUENCY, CALLS, RETRIED, ERROR_RATE, SELF, CRITICAL)
FISHER, MANN_WHITNEY = "fisher", "mann-whitney"
TOO_FEW, UNTESTED = "too_few", "untested"
TIMED = (SELF, CRITICAL, DURATION)


@dataclass(slots=True)
class Test:
    """One metric compared: each set's value, the test, and what it decided."""

    metric: str  # one of METRICS, or "duration" (end to end)
    method: str | None  # FISHER or MANN_WHITNEY; None when not run
    a: float | None  # shares for frequency and error rate, means otherwise (times in ns)
    b: float | None
    p_value: float | None = None
    p_adjusted: float | None = None
    verdict: str = SAME  # CHANGED, SAME, TOO_FEW or UNTESTED
    node: int | None = field(default=None, repr=False)


@dataclass(slots=True)
class Tested:
    """Every test's outcome, per node, and the changes they found."""

    duration: Test
    tests: dict[int, tuple[Test, ...]] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)


def run_tests(
    nodes: list[Node], before: dict[int, SetMeasure], after: dict[int, SetMeasure],
    durations: tuple[list[float], list[float]], sizes: tuple[int, int], settings: SetSettings,
) -> Tested:  # fmt: skip
    """Run every test, correct them together, and say which changed (``durations``: of the
    timed requests; ``sizes``: how many requests each set has, timed or not)."""
    needed = settings.min_requests
    everything = [_duration(durations, needed)]
    for n in sorted(before.keys() | after.keys()):
        everything += _node_tests(n, before.get(n), after.get(n), sizes, needed)
    ran = [test for test in everything if test.p_value is not None]
    for test, adjusted in zip(ran, holm([t.p_value or 0.0 for t in ran]), strict=True):
        test.p_adjusted = adjusted
        test.verdict = CHANGED if adjusted < settings.alpha and _large(test, settings) else SAME
    tested = Tested(everything[0])
    for test in everything[1:]:
        assert test.node is not None
        tested.tests[test.node] = (*tested.tests.get(test.node, ()), test)
    tested.changes = [_change(nodes, test) for test in everything if test.verdict == CHANGED]
    return tested


def _duration(durations: tuple[list[float], list[float]], needed: int) -> Test:
    a, b = durations
    test = Test(DURATION, MANN_WHITNEY, _mean(a), _mean(b))
    if min(len(a), len(b)) < needed:
        test.method, test.verdict = None, TOO_FEW
    else:
        test.p_value = mann_whitney(a, b)
    return test


def _mean(values: list[float] | list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def _node_tests(
    n: int, a: SetMeasure | None, b: SetMeasure | None, sizes: tuple[int, int], needed: int
) -> list[Test]:
    reached = (a.requests if a else 0, b.requests if b else 0)
    frequency = Test(FREQUENCY, FISHER, reached[0] / max(sizes[0], 1),
                     reached[1] / max(sizes[1], 1), node=n)  # fmt: skip
    if min(sizes) < needed:
        frequency.method, frequency.verdict = None, TOO_FEW
    else:
        frequency.p_value = fisher_exact(reached[0], sizes[0], reached[1], sizes[1])
    return [frequency, *(_conditional(n, metric, a, b, needed) for metric in METRICS[1:])]


def _conditional(n: int, metric: str, a: SetMeasure | None, b: SetMeasure | None,
                 needed: int) -> Test:  # fmt: skip
    """A metric among the requests that reach the node: untested where one set never does."""
    test = Test(metric, FISHER if metric == ERROR_RATE else MANN_WHITNEY,
                _value(metric, a), _value(metric, b), node=n)  # fmt: skip
    if a is None or b is None:
        test.method, test.verdict = None, UNTESTED
    elif min(_reached(metric, a), _reached(metric, b)) < needed:
        test.method, test.verdict = None, TOO_FEW
    elif metric == RETRIED and not any(a.retries) and not any(b.retries):
        test.method = None  # nothing retried: no test to spend the error budget on
    elif metric == ERROR_RATE:
        test.p_value = fisher_exact(a.failed, a.requests, b.failed, b.requests)
    else:
        test.p_value = mann_whitney(_samples(metric, a), _samples(metric, b))
    return test


def _reached(metric: str, found: SetMeasure) -> int:
    """The requests reaching the node that the metric has a value of: the timed ones, for a
    time (see ``sets``)."""
    return len(_samples(metric, found)) if metric in (SELF, CRITICAL) else found.requests


def _value(metric: str, found: SetMeasure | None) -> float | None:
    if found is None:
        return None
    return {
        CALLS: statistics.fmean(found.asked) if found.asked else 0.0,
        RETRIED: found.retries_per_request,
        ERROR_RATE: found.error_rate,
        SELF: found.mean_self_ns,
        CRITICAL: found.mean_critical_ns,
    }[metric]


def _samples(metric: str, found: SetMeasure) -> list[int]:
    samples = {CALLS: found.asked, RETRIED: found.retries, SELF: found.self_ns,
               CRITICAL: found.critical_ns}  # fmt: skip
    return samples[metric]


def _large(test: Test, settings: SetSettings) -> bool:
    """Timings must also change beyond the thresholds; counts and shares need significance only."""
    if test.metric not in TIMED:
        return True
    return settings.thresholds.exceeded(test.a or 0.0, test.b or 0.0)


def _change(nodes: list[Node], test: Test) -> Change:
    a, b = test.a or 0.0, test.b or 0.0
    p = f" (p={test.p_adjusted:.2g})"
    if test.node is None:
        pct = round((b - a) / a * 100, 3) if a else None
        message = (f"mean end to end {duration(a)} -> {duration(b)} "
                   f"({signed(b - a)}, {signed_pct(b - a, a)}){p}")  # fmt: skip
        return Change(DURATION, TIMING, None, message, round((b - a) / 1e6, 3), pct)
    label = nodes[test.node].label()
    if test.metric == FREQUENCY:
        kind = ADDED if a == 0 else REMOVED if b == 0 else FREQUENCY
        prefix = f"{kind} " if kind != FREQUENCY else ""
        message = f"{prefix}{label}: in {a:.0%} -> {b:.0%} of requests{p}"
        return Change(kind, STRUCTURE, test.node, message)
    if test.metric == CALLS:
        message = f"{label}: {a:.2f} -> {b:.2f} calls per request{p}"
        return Change(CALLS, STRUCTURE, test.node, message)
    if test.metric == RETRIED:
        message = f"{label}: {a:.2f} -> {b:.2f} retries per request{p}"
        return Change(RETRIED, RETRIES, test.node, message)
    if test.metric == ERROR_RATE:
        message = f"{label}: failed in {a:.1%} -> {b:.1%} of the requests reaching it{p}"
        return Change(ERROR_RATE, ERRORS, test.node, message)
    words = "self time" if test.metric == SELF else "critical-path time"
    message = f"{label}: mean {words} {duration(a)} -> {duration(b)} ({signed(b - a)}){p}"
    return Change("timing", TIMING, test.node, message, round((b - a) / 1e6, 3))
