"""From checks to a verdict: Holm's correction, one class per metric, a score and the reasons.

A metric's class combines two questions, each at the look's error budget:

- is the canary significantly worse? (its one-sided p, Holm-corrected over every route and
  metric tested, below alpha)
- is "worse than the tolerance" ruled out? (the interval's upper end at or under the tolerance)

worse and not ruled out: fail; worse but within tolerance: marginal, or pass where even half the
tolerance is ruled out (a significant 1% on 100,000 requests); not worse and ruled out: pass;
neither: inconclusive, with the number of requests that would settle it. A pass needs every
metric ruled within tolerance (an intersection of tests, valid at alpha without correction), so
too little data can never pass.

The score (as Kayenta's) is the share of decided metrics that pass, a marginal one counting half;
a failing critical metric fails the verdict and scores 0; a failing non-critical one fails it when
the score drops below ``MARGINAL_SCORE``, else makes it marginal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from tracekit._stats import holm
from tracekit.canary.checks import (
    Check,
    check_errors_among_all,
    check_new_route_errors,
    check_route,
)
from tracekit.canary.explain import FAIL, INCONCLUSIVE, MARGINAL, PASS, explain, round_requests
from tracekit.canary.proportions import fisher_greater
from tracekit.canary.samples import UNMATCHED_ROUTE, RouteKey, RouteSamples, VersionSamples
from tracekit.canary.settings import Settings

__all__ = ["MARGINAL_SCORE", "MetricResult", "Subject", "Verdict", "holm", "judge"]

MARGINAL_SCORE = 75.0  # Kayenta's usual marginal threshold
_NONE = RouteSamples.of([], 0)  # a route the canary served no request of
_CREDIT = {PASS: 1.0, MARGINAL: 0.5, FAIL: 0.0}


@dataclass(frozen=True, slots=True)
class Subject:
    """What is compared: one service's two versions over one window, read from one source."""

    service: str
    baseline_version: str
    canary_version: str
    start_unix_nano: int
    end_unix_nano: int
    source: str  # "store" or "prometheus"


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One metric on one route, classified and explained."""

    check: Check
    critical: bool
    adjusted_p: float | None
    classification: str
    explanation: str

    @property
    def label(self) -> str:
        """``latency of GET /orders``-style name for reasons and tables."""
        return f"{self.check.metric} of {self.check.key.route}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one canary analysis; ``tracekit.canary.report`` turns it into JSON."""

    subject: Subject
    settings: Settings
    baseline_requests: int
    canary_requests: int
    verdict: str
    score: float | None
    metrics: tuple[MetricResult, ...]
    decided_by: tuple[MetricResult, ...]
    reasons: tuple[str, ...]
    more_requests: int | None
    warnings: tuple[str, ...]


def judge(
    subject: Subject,
    baseline: VersionSamples,
    canary: VersionSamples,
    settings: Settings | None = None,
    routes: Sequence[str] | None = None,
) -> Verdict:
    """Compare ``canary`` with ``baseline`` route by route and decide."""
    settings = settings or Settings()
    keys, errors_only, warnings = _routes(subject, baseline, canary, routes, settings)
    tests = 3 * len(keys) + len(errors_only)
    checks = [
        check
        for key in keys
        for check in check_route(key, baseline[key], canary.get(key, _NONE), settings, tests)
    ]
    checks += [_errors_only(key, baseline, canary, settings, tests) for key in errors_only]
    results = _classify(checks, settings)
    verdict, score, decided = _decide(results)
    reasons = _reasons(subject, verdict, decided, results, baseline, canary)
    more = _more_requests(decided) if verdict == INCONCLUSIVE else None
    among = [_counted_among(baseline, key) for key in errors_only]
    return Verdict(
        subject, settings, _total(baseline, routes, among), _total(canary, routes, among),
        verdict, score, tuple(results), tuple(decided), tuple(reasons), more, tuple(warnings),
    )  # fmt: skip


def _routes(
    subject: Subject,
    baseline: VersionSamples,
    canary: VersionSamples,
    routes: Sequence[str] | None,
    settings: Settings,
) -> tuple[list[RouteKey], list[RouteKey], list[str]]:
    """The routes to compare (those asked for, else all but unmatched ones), those whose errors
    alone are compared (the unmatched ones, and routes only the canary serves), and warnings.

    A route is compared when both versions served it, or only the baseline did while the canary
    served others: a route the canary stopped serving has no evidence and cannot pass. A route
    only the canary serves (a new endpoint) has no baseline to be slower than, but its failures
    are failures the baseline did not have: they are counted among all the canary's requests
    (of its kind, or of every kind when the baseline served none of its kind: a new queue
    consumer beside HTTP routes), or on its own requests where that would hide them under the
    tolerance (``_on_its_own``).
    """
    keys, errors_only, warnings = _asked_routes(baseline, canary, routes)
    served_any = bool(canary)  # then a route only the baseline served is one it stopped serving
    compared = [key for key in keys if key in baseline and (key in canary or served_any)]
    for key in keys:
        if key in baseline and key in canary:
            continue
        version, samples = (
            (subject.baseline_version, baseline)
            if key in baseline
            else (subject.canary_version, canary)
        )
        said = f"route {key.route!r}: only version {version} has requests ({samples[key].requests})"
        if key not in baseline and baseline:
            errors_only.append(key)
            said += (
                "; only its errors are compared, of its own requests: as a share of all requests"
                " they would hide under the tolerance"
                if _on_its_own(key, baseline, canary, settings)
                else "; only its errors are compared, as a share of all requests"
            )
        warnings.append(said)
    return compared, errors_only, warnings + _untimed(subject, baseline, canary, compared)


def _untimed(
    subject: Subject, baseline: VersionSamples, canary: VersionSamples, compared: list[RouteKey]
) -> list[str]:
    """Warnings for the compared routes none of whose baseline requests succeeded: only their
    errors are compared (``check_route``), there being no baseline latency to compare with."""
    return [
        f"route {key.route!r}: none of version {subject.baseline_version}'s"
        f" {baseline[key].requests} requests succeeded; only its errors are compared"
        for key in compared
        if key in canary and baseline[key].all_failed
    ]


def _asked_routes(
    baseline: VersionSamples, canary: VersionSamples, routes: Sequence[str] | None
) -> tuple[list[RouteKey], list[RouteKey], list[str]]:
    """The routes asked for, else every route but the unmatched ones, whose errors alone are
    compared (where the canary serves their kind and the baseline served anything); and
    warnings about either."""
    keys = sorted(set(baseline) | set(canary))
    if routes:
        wanted = set(routes)
        missing = sorted(wanted - {key.route for key in keys})
        warnings = [f"route {r!r}: no requests of either version in the window" for r in missing]
        return [key for key in keys if key.route in wanted], [], warnings
    if not any(key.route == UNMATCHED_ROUTE for key in keys):
        return keys, [], []
    warning = (
        f"requests that matched no route ({UNMATCHED_ROUTE}): only their errors are compared,"
        f" as a share of all requests; name it with --route to compare it as a route"
    )
    errors_only = [
        key
        for key in keys
        if key.route == UNMATCHED_ROUTE and baseline and _serves(canary, key.kind)
    ]  # counted among the baseline's requests of its kind, or of every kind (_counted_among)
    return [key for key in keys if key.route != UNMATCHED_ROUTE], errors_only, [warning]


def _serves(samples: VersionSamples, kind: str) -> bool:
    return any(key.kind == kind for key in samples)


def _counted_among(baseline: VersionSamples, key: RouteKey) -> frozenset[str] | None:
    """The kinds of requests ``key``'s failures are counted among: its own, or every kind
    (None) when the baseline served none of its kind."""
    return frozenset({key.kind}) if _serves(baseline, key.kind) else None


def _errors_only(
    key: RouteKey, baseline: VersionSamples, canary: VersionSamples, settings: Settings, tests: int
) -> Check:
    """The one check of a route whose errors alone are compared: its failures among every
    request of the version (of the kinds ``_counted_among`` gives), or its own (``_on_its_own``)."""
    kinds = _counted_among(baseline, key)
    if _on_its_own(key, baseline, canary, settings):
        everything = _everything(baseline, kinds)
        return check_new_route_errors(key, everything, canary[key], settings, tests)
    return check_errors_among_all(key, _everything(baseline, kinds, key),
                                  _everything(canary, kinds, key), settings, tests)  # fmt: skip


def _on_its_own(
    key: RouteKey, baseline: VersionSamples, canary: VersionSamples, settings: Settings
) -> bool:
    """Whether a route only the canary serves is judged on its own requests, against the
    baseline's rate among all of its requests (``check_new_route_errors``): where its failures,
    counted among every request of the version, are within the tolerance, while its own
    requests fail beyond it, and significantly more often than the baseline's. Among thousands
    of healthy requests, a new endpoint that failed every one of its own passed."""
    if key.route == UNMATCHED_ROUTE or key in baseline:
        return False
    kinds = _counted_among(baseline, key)
    own, usual = canary[key], _everything(baseline, kinds)
    rise = own.errors / own.requests - usual.errors / max(1, usual.requests)
    among = own.errors / _everything(canary, kinds).requests
    p = fisher_greater(own.errors, own.requests, usual.errors, usual.requests)
    return among <= settings.error_tolerance < rise and p < settings.alpha_per_look


def _everything(
    samples: VersionSamples, kinds: frozenset[str] | None, counted: RouteKey | None = None
) -> RouteSamples:
    """Every request of a version of ``kinds`` (None: of every kind), failed where it was one
    of the ``counted`` key's failures (None: where it failed)."""
    parts = [part for key, part in samples.items() if kinds is None or key.kind in kinds]
    if counted is None:
        errors = sum(part.errors for part in parts)
    else:
        errors = samples[counted].errors if counted in samples else 0
    joined = RouteSamples.joined(parts, errors)
    return replace(joined, uncounted=sum(part.requests for part in parts) - joined.requests)


def _classify(checks: list[Check], settings: Settings) -> list[MetricResult]:
    adjusted = holm([check.p_value for check in checks])
    results = []
    for check, p in zip(checks, adjusted, strict=True):
        worse = p is not None and p < settings.alpha_per_look
        cls = _class_of(check, p, worse)
        words = explain(check, cls, p, settings.confidence, settings.tail_quantile, worse)
        results.append(MetricResult(check, check.metric in settings.critical, p, cls, words))
    return results


def _class_of(check: Check, adjusted_p: float | None, worse: bool) -> str:
    """``worse``: the adjusted p-value is under the look's alpha."""
    if adjusted_p is None:
        return INCONCLUSIVE
    within = check.upper is not None and check.upper <= check.tolerance
    if worse and not within:
        return FAIL
    if worse and not check.well_within:
        return MARGINAL
    return PASS if within else INCONCLUSIVE


def _decide(results: list[MetricResult]) -> tuple[str, float | None, list[MetricResult]]:
    """The verdict, the score and the metrics that decided it."""
    by_class = {cls: [r for r in results if r.classification == cls] for cls in _CREDIT}
    decided = [r for r in results if r.classification != INCONCLUSIVE]
    critical_fails = [r for r in by_class[FAIL] if r.critical]
    score = None
    if decided:
        score = 100 * sum(_CREDIT[r.classification] for r in decided) / len(decided)
    if critical_fails:
        return FAIL, 0.0, critical_fails
    if by_class[FAIL] and score is not None and score < MARGINAL_SCORE:
        return FAIL, score, by_class[FAIL]
    if by_class[FAIL] or by_class[MARGINAL]:
        return MARGINAL, score, by_class[FAIL] + by_class[MARGINAL]
    inconclusive = [r for r in results if r.classification == INCONCLUSIVE]
    if inconclusive or not results:
        return INCONCLUSIVE, score, inconclusive
    return PASS, score, results


def _reasons(
    subject: Subject,
    verdict: str,
    decided: list[MetricResult],
    results: list[MetricResult],
    baseline: VersionSamples,
    canary: VersionSamples,
) -> list[str]:
    if not results:
        return [_why_nothing_compared(subject, baseline, canary)]
    if verdict == PASS:
        routes = len({r.check.key for r in results})
        return [f"all {len(results)} metrics on {routes} route(s) are within their tolerance"]
    worse = [r for r in results if r.classification in (FAIL, MARGINAL) and r not in decided]
    return [f"{r.label}: {r.explanation}" for r in decided] + [
        f"also {r.label}: {r.explanation}" for r in worse
    ]


def _why_nothing_compared(
    subject: Subject, baseline: VersionSamples, canary: VersionSamples
) -> str:
    if not canary:
        return f"no requests of canary version {subject.canary_version} in the window"
    if not baseline:
        return f"no requests of baseline version {subject.baseline_version} in the window"
    return "no route has requests of both versions in the window"


def _more_requests(decided: list[MetricResult]) -> int | None:
    """The most any undecided metric still needs (None: some need more than can be said)."""
    counts = [r.check.more_requests for r in decided]
    if not counts or any(count is None for count in counts):
        return None
    return round_requests(max(count for count in counts if count is not None))


def _total(
    samples: VersionSamples, routes: Sequence[str] | None, among: list[frozenset[str] | None]
) -> int:
    """Requests of one version in the window: on the routes asked for, if any, and those of the
    kinds (None: every kind) an errors-only route's failures are counted among, which are its
    ``n``: a new route asked for by name is judged among the version's other requests."""

    def counted(key: RouteKey) -> bool:
        asked = not routes or key.route in routes
        return asked or any(kinds is None or key.kind in kinds for kinds in among)

    return sum(s.requests for key, s in samples.items() if counted(key))
