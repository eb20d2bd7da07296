"""One line of plain words per metric: what was measured, what it means, and what is missing."""

from __future__ import annotations

import math

from tracekit.canary.checks import Check
from tracekit.canary.samples import UNMATCHED_ROUTE, RouteSamples
from tracekit.canary.settings import ERROR_RATE, LATENCY

__all__ = [
    "CLASSES",
    "FAIL",
    "INCONCLUSIVE",
    "MARGINAL",
    "PASS",
    "explain",
    "format_seconds",
    "round_requests",
]

PASS, MARGINAL, FAIL, INCONCLUSIVE = "pass", "marginal", "fail", "inconclusive"
CLASSES = (PASS, MARGINAL, FAIL, INCONCLUSIVE)


def explain(
    check: Check, cls: str, adjusted_p: float | None, confidence: float, q: float,
    significant: bool = False,
) -> str:  # fmt: skip
    """Why ``check`` got class ``cls``, in words; ``significant``: its adjusted p-value is under
    alpha (a pass then says by how little it is worse)."""
    if not check.canary.requests:
        return (
            f"no canary requests ({check.baseline.requests} baseline): a route the canary"
            f" stopped serving cannot pass"
        )
    if check.metric != ERROR_RATE and not check.canary.succeeded:
        return _nothing_timed(check.canary)
    if check.p_value is None or check.estimate is None:
        return f"{_too_few(check)}; {_more(check)}"
    measured = _measured(check, confidence, q)
    tolerance = _tolerance(check)
    if check.metric == ERROR_RATE:
        worse, excess = "more errors", "an increase"
    else:
        worse, excess = "slower", "a slowdown"
    if cls == FAIL:
        return (
            f"{measured}: significantly {worse} ({_p(adjusted_p)}),"
            f" and {excess} beyond {tolerance} is not ruled out"
        )
    if cls == MARGINAL:
        return f"{measured}: significantly {worse} ({_p(adjusted_p)}), but within {tolerance}"
    if cls == PASS and significant:
        return (
            f"{measured}: significantly {worse} ({_p(adjusted_p)}), but {excess} beyond half"
            f" {tolerance} is ruled out"
        )
    if cls == PASS:
        return (
            f"{measured}: not significantly {worse}, and {excess} beyond {tolerance} is ruled out"
        )
    return (
        f"{measured}: not significantly {worse}, but {excess} beyond {tolerance} is not ruled"
        f" out; {_more(check)}"
    )


def _nothing_timed(canary: RouteSamples) -> str:
    if canary.all_failed:
        return (
            f"none of the canary's {canary.requests} requests succeeded: nothing to time"
            f" (its failures are judged by the error rate)"
        )
    # succeeded while the clock stepped back: not failures, and not 0 ms either
    return (
        f"none of the canary's {canary.requests} requests was timed: {canary.uncounted}"
        f" succeeded while the clock stepped back, {canary.errors} failed"
    )


def _too_few(check: Check) -> str:
    if check.metric == ERROR_RATE:
        counts = (check.baseline.requests, check.canary.requests)
        return f"too few requests to compare ({counts[0]} baseline, {counts[1]} canary)"
    counts = (check.baseline.succeeded, check.canary.succeeded)
    return f"too few successful requests to time ({counts[0]} baseline, {counts[1]} canary)"


def _measured(check: Check, confidence: float, q: float) -> str:
    level = f"{confidence:.0%}"
    if check.metric == ERROR_RATE:
        before = check.baseline.errors / check.baseline.requests
        after = check.canary.errors / check.canary.requests
        what = "errors"
        if check.among_all:
            where = (
                "outside any route"
                if check.key.route == UNMATCHED_ROUTE
                else "on a route only the canary serves"
            )
            what = f"failed {where} (of all requests)"
        if check.against_all:
            what = (
                "failed on a route only the canary serves (of its requests; the baseline's: of all)"
            )
        return (
            f"{what} {before:.2%} -> {after:.2%}"
            f" ({_points(check.estimate)}, {level} interval {_points(check.lower)}"
            f" to {_points(check.upper)})"
        )
    quantile = 0.5 if check.metric == LATENCY else q
    subject = "typical request" if check.metric == LATENCY else f"p{q * 100:g}"
    return (
        f"{subject} {_ratio(check.estimate)} (p{quantile * 100:g}"
        f" {format_seconds(check.baseline.quantile(quantile))} ->"
        f" {format_seconds(check.canary.quantile(quantile))}, {level} interval"
        f" {_ratio(check.lower)} to {_ratio(check.upper)})"
    )


def _tolerance(check: Check) -> str:
    if check.metric == ERROR_RATE:
        return f"the {_points(check.tolerance)} tolerance"
    return f"the {_ratio(check.tolerance)} tolerance"


def _more(check: Check) -> str:
    if check.coarse:
        return "the histogram's buckets are too coarse to tell, whatever the traffic"
    if check.more_requests is None:
        return "far more requests needed than this traffic gives"
    return f"about {round_requests(check.more_requests):,} more canary requests needed"


def round_requests(count: int) -> int:
    """``count`` rounded up to two significant digits: an estimate should not look exact."""
    if count < 100:
        return count
    unit = 10 ** (len(str(count)) - 2)
    return int(-(-count // unit) * unit)


def _ratio(log_ratio: float | None) -> str:
    return "?x" if log_ratio is None else f"{math.exp(log_ratio):.3g}x"


def _points(difference: float | None) -> str:
    if difference is None:
        return "?"
    return f"{difference * 100:+.2f} pp"


def _p(adjusted_p: float | None) -> str:
    return "adjusted p ?" if adjusted_p is None else f"adjusted p {adjusted_p:.2g}"


def format_seconds(seconds: float) -> str:
    """A duration with three significant digits: ``950 us``, ``12.3 ms``, ``1.23 s``."""
    if math.isnan(seconds):
        return "-"
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"
