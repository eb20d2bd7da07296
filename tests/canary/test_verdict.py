"""The verdict on plain samples: sparse errors, critical metrics, scores, reasons and the JSON.

Several cases are the failures of other canary judges the issue lists (Kayenta, Flagger): each is
reproduced here and must not pass.
"""

from __future__ import annotations

import json
import math
import random

import jsonschema
import numpy as np
import pytest

from tracekit.canary import (
    HTTP,
    MESSAGING,
    RouteKey,
    RouteSamples,
    Settings,
    Subject,
    Verdict,
    exit_code,
    judge,
    load_schema,
    to_json,
)
from tracekit.canary.samples import spread_histogram
from tracekit.canary.verdict import holm

SUBJECT = Subject("orders", "1.0", "1.1", 0, 1_800_000_000_000, "store")
ORDERS = RouteKey(HTTP, "/orders/{id}")


def lognormal(n: int, seed: int, *, scale: float = 1.0, sigma: float = 0.5) -> list[float]:
    rng = random.Random(seed)
    return [0.05 * scale * rng.lognormvariate(0, sigma) for _ in range(n)]


def served(n: int, errors: int, seed: int, *, scale: float = 1.0) -> RouteSamples:
    """``n`` requests, ``errors`` of them failed: the others timed (latency is of successes)."""
    return RouteSamples.of(lognormal(n - errors, seed, scale=scale), errors)


def verdict_of(
    n: int,
    baseline_errors: int,
    canary_errors: int,
    *,
    seed: int = 1,
    scale: float = 1.0,
    settings: Settings | None = None,
) -> Verdict:
    baseline = {ORDERS: served(n, baseline_errors, seed)}
    canary = {ORDERS: served(n, canary_errors, seed + 1000, scale=scale)}
    return judge(SUBJECT, baseline, canary, settings)


def metric(verdict: Verdict, name: str) -> dict:
    return next(m for m in to_json(verdict)["metrics"] if m["name"] == name)


def test_zero_against_three_errors_in_fifty_is_inconclusive_with_a_number() -> None:
    verdict = verdict_of(50, 0, 3)

    errors = metric(verdict, "error_rate")
    assert errors["class"] == "inconclusive"
    assert verdict.verdict == "inconclusive"
    assert errors["more_requests_needed"] > 0
    assert (
        f"about {errors['more_requests_needed']} more canary requests needed"
        in (errors["explanation"])
    )
    assert verdict.more_requests is not None and verdict.more_requests >= 50


def test_a_metric_needs_the_number_of_requests_its_explanation_says() -> None:
    """One canary request against 400: its error rate needs a few hundred more, a number the
    explanation rounds ("about 270"); the field beside it, and the verdict's, say the same."""
    verdict = judge(SUBJECT, {ORDERS: served(400, 0, 1)}, {ORDERS: served(1, 0, 2)})

    errors = metric(verdict, "error_rate")
    assert errors["class"] == "inconclusive"
    assert errors["more_requests_needed"] >= 100
    assert (
        f"about {errors['more_requests_needed']:,} more canary requests needed"
        in errors["explanation"]
    )
    assert to_json(verdict)["more_requests_needed"] == errors["more_requests_needed"]


def test_zero_against_zero_errors_in_fifty_is_inconclusive() -> None:
    verdict = verdict_of(50, 0, 0)

    assert metric(verdict, "error_rate")["class"] == "inconclusive"
    assert verdict.verdict == "inconclusive"
    # 0 of n allows up to z^2/(n + z^2): n = 266 brings that under 1% (about 220 more)
    assert 150 <= metric(verdict, "error_rate")["more_requests_needed"] <= 300


def test_zero_against_zero_errors_in_four_hundred_can_pass() -> None:
    verdict = verdict_of(400, 0, 0)

    assert metric(verdict, "error_rate")["class"] == "pass"
    assert verdict.verdict == "pass"
    assert exit_code(verdict.verdict) == 0


def test_errors_on_a_canary_against_a_clean_baseline_do_not_pass() -> None:
    """kayenta#426: canary errors [0,1,2,1,0,0] over six intervals, baseline all zero, passed."""
    verdict = verdict_of(300, 0, 4)

    errors = metric(verdict, "error_rate")
    assert errors["class"] == "inconclusive"
    assert errors["effect"]["estimate"] == pytest.approx(4 / 300, abs=1e-6)
    assert verdict.verdict == "inconclusive"


def test_a_zero_baseline_gives_numbers_not_nan() -> None:
    """spinnaker#5622: a zero baseline mean made the ratio NaN and the check was skipped."""
    document = to_json(verdict_of(300, 0, 10))
    text = json.dumps(document, allow_nan=False)  # raises on NaN or infinity

    errors = metric(verdict_of(300, 0, 10), "error_rate")
    assert errors["class"] == "fail"
    assert errors["summary"]["baseline"]["error_rate"] == 0.0
    assert errors["effect"]["interval"][0] > 0
    assert "NaN" not in text


def test_a_huge_imprecise_shift_does_not_pass() -> None:
    """spinnaker#6278: interval [6.8e-5, 99] around a ratio of 70 passed."""
    rng = random.Random(0)
    baseline = [0.05 * rng.lognormvariate(0, 4) for _ in range(10)]
    canary = [70 * 0.05 * rng.lognormvariate(0, 4) for _ in range(10)]
    verdict = judge(
        SUBJECT, {ORDERS: RouteSamples.of(baseline, 0)}, {ORDERS: RouteSamples.of(canary, 0)}
    )

    latency = metric(verdict, "latency")
    lower, upper = latency["effect"]["interval"]
    assert lower < 1 and upper > 1000 and latency["effect"]["estimate"] > 50
    assert latency["class"] == "inconclusive"
    assert "more canary requests needed" in latency["explanation"]
    assert verdict.verdict == "inconclusive"


def test_a_failing_critical_metric_fails_the_verdict_with_score_zero() -> None:
    routes = [RouteKey(HTTP, f"/r{i}") for i in range(6)]
    baseline = {key: RouteSamples.of(lognormal(400, i), 0) for i, key in enumerate(routes)}
    canary = {key: RouteSamples.of(lognormal(400, 100 + i), 0) for i, key in enumerate(routes)}
    canary[routes[2]] = served(400, 20, 102)

    verdict = judge(SUBJECT, baseline, canary)

    assert verdict.verdict == "fail"
    assert verdict.score == 0
    assert [(r.check.metric, r.check.key.route) for r in verdict.decided_by] == [
        ("error_rate", "/r2")
    ]
    assert verdict.reasons[0].startswith("error_rate of /r2: errors 0.00% -> 5.00%")


def test_a_canary_one_percent_slower_over_many_requests_passes() -> None:
    """100,000 requests a version make a 1% slowdown significant (adjusted p 3e-05; 0.013 at p95),
    and an interval ending at 1.014x rules out anything near the 1.2x tolerance: it read
    "significantly slower, but within the 1.2x tolerance", marginal, which a strict gate fails.
    Kayenta passes a change under its allowed increase however significant; a change ruled out
    beyond half the tolerance passes here."""
    verdict = verdict_of(100_000, 0, 0, scale=1.01)
    latency = next(r for r in verdict.metrics if r.check.metric == "latency")

    assert (verdict.verdict, exit_code(verdict.verdict, strict=True)) == ("pass", 0)
    assert latency.explanation.startswith("typical request 1.01x")
    assert latency.explanation.endswith(
        ": significantly slower (adjusted p 3e-05), but a slowdown beyond half the 1.2x"
        " tolerance is ruled out"
    ), latency.explanation


def test_a_non_critical_failure_fails_a_small_service_and_is_marginal_in_a_large_one() -> None:
    def with_slow_route(routes: int) -> Verdict:
        keys = [RouteKey(HTTP, f"/r{i}") for i in range(routes)]
        baseline = {key: RouteSamples.of(lognormal(400, i), 0) for i, key in enumerate(keys)}
        canary = {key: RouteSamples.of(lognormal(400, 50 + i), 0) for i, key in enumerate(keys)}
        canary[keys[0]] = RouteSamples.of(lognormal(400, 50, scale=2.0), 0)
        return judge(SUBJECT, baseline, canary)

    small, large = with_slow_route(1), with_slow_route(8)

    assert small.verdict == "fail"
    assert large.verdict == "marginal"
    assert large.score is not None and large.score >= 75
    for verdict in (small, large):
        failed = {(r.check.metric, r.check.key.route) for r in verdict.decided_by}
        assert ("latency", "/r0") in failed
        assert exit_code(verdict.verdict, strict=True) == 1


def test_latency_can_be_made_critical() -> None:
    settings = Settings(critical=frozenset({"latency", "error_rate"}))
    keys = [RouteKey(HTTP, f"/r{i}") for i in range(8)]
    baseline = {key: RouteSamples.of(lognormal(400, i), 0) for i, key in enumerate(keys)}
    canary = {key: RouteSamples.of(lognormal(400, 50 + i), 0) for i, key in enumerate(keys)}
    canary[keys[0]] = RouteSamples.of(lognormal(400, 50, scale=2.0), 0)

    assert judge(SUBJECT, baseline, canary, settings).verdict == "fail"


def test_more_looks_spend_less_of_the_error_budget_each() -> None:
    one = to_json(verdict_of(400, 0, 0))
    five = to_json(verdict_of(400, 0, 0, settings=Settings(max_looks=5)))

    assert five["settings"]["alpha_per_look"] == 0.01
    assert five["settings"]["confidence"] == 0.98
    first, later = one["metrics"][2]["effect"], five["metrics"][2]["effect"]
    assert later["interval"][1] > first["interval"][1]  # a wider interval at each look
    assert five["verdict"] == "inconclusive"  # 0 of 400 no longer rules out +1 pp at 1%


def test_holm_matches_the_step_down_definition() -> None:
    p = [0.01, 0.04, None, 0.03, 0.2]
    # sorted: 0.01 (x4) = 0.04, 0.03 (x3) = 0.09, 0.04 (x2) = 0.08 -> 0.09, 0.2 (x1) -> 0.2
    assert holm(p) == pytest.approx([0.04, 0.09, None, 0.09, 0.2])


def test_the_document_follows_the_schema_and_is_byte_identical_across_runs() -> None:
    first = json.dumps(to_json(verdict_of(300, 2, 9, scale=1.3)), indent=2, ensure_ascii=False)
    second = json.dumps(to_json(verdict_of(300, 2, 9, scale=1.3)), indent=2, ensure_ascii=False)

    assert first == second
    jsonschema.validate(json.loads(first), load_schema())


def _beside_orders(key: RouteKey, errors: int) -> Verdict:
    """The baseline serves /orders alone; the canary serves it too, and 200 requests of ``key``,
    ``errors`` of them failed."""
    baseline = {ORDERS: RouteSamples.of(lognormal(400, 1), 0)}
    canary = {
        ORDERS: RouteSamples.of(lognormal(400, 2), 0),
        key: served(200, errors, 3),
    }
    return judge(SUBJECT, baseline, canary)


def test_a_route_only_the_canary_serves_is_judged_by_its_errors_among_all_requests() -> None:
    """A new endpoint was only warned about: a canary failing all 200 of its requests on it
    (a third of its traffic) passed, even under --gate strict. Its latency has no baseline to
    be compared with, but its failures are failures the baseline did not have."""
    new = RouteKey(HTTP, "/new-endpoint")
    failing, healthy = _beside_orders(new, 200), _beside_orders(new, 0)

    for verdict in (failing, healthy):
        assert [(r.check.key, r.check.metric) for r in verdict.metrics][-1] == (new, "error_rate")
        assert [r.check.key for r in verdict.metrics].count(new) == 1  # no latency checks
        assert verdict.warnings == (
            "route '/new-endpoint': only version 1.1 has requests (200); only its errors are"
            " compared, as a share of all requests",
        )
    assert failing.verdict == "fail"
    assert exit_code(failing.verdict, strict=True) == 1
    assert any(
        "error_rate of /new-endpoint: failed on a route only the canary serves (of all"
        " requests) 0.00% -> 33.33%" in reason
        for reason in failing.reasons
    ), failing.reasons
    assert metric(healthy, "error_rate")["class"] == "pass"
    assert healthy.verdict != "fail"


@pytest.mark.parametrize("requests", [2, 14])
def test_a_new_route_failing_its_few_requests_among_many_healthy_ones_fails(requests: int) -> None:
    """Two versions under uvicorn, spans through a real collector: a canary failing every request
    of a new endpoint (2, then 14 of them) beside 6,900 healthy requests passed, exit 0, its
    failures 0.03% and 0.2% of all requests, within the 1 pp tolerance. Judged on its own
    requests against the baseline's rate among all of its requests, it fails; a new endpoint
    with as few requests and no failures still passes."""
    new = RouteKey(HTTP, "/new/{n}")
    baseline = {ORDERS: served(6000, 0, 1)}
    failing = judge(
        SUBJECT, baseline, {ORDERS: served(6000, 0, 2), new: served(requests, requests, 3)}
    )
    healthy = judge(SUBJECT, baseline, {ORDERS: served(6000, 0, 2), new: served(requests, 0, 3)})

    assert (failing.verdict, exit_code(failing.verdict)) == ("fail", 1)
    errors = next(m for m in to_json(failing)["metrics"] if m["route"] == "/new/{n}")
    assert errors["n"] == {"baseline": 6000, "canary": requests}
    assert errors["summary"]["canary"]["error_rate"] == 1.0
    assert failing.reasons[0].startswith(
        "error_rate of /new/{n}: failed on a route only the canary serves (of its requests; the"
        " baseline's: of all) 0.00% -> 100.00%"
    ), failing.reasons
    assert failing.warnings == (
        f"route '/new/{{n}}': only version 1.1 has requests ({requests}); only its errors are"
        " compared, of its own requests: as a share of all requests they would hide under the"
        " tolerance",
    )
    assert healthy.verdict == "pass"


def test_a_new_queue_consumer_is_judged_by_its_errors_among_every_request() -> None:
    """A new queue consumer beside HTTP routes was only warned about ("the baseline consumed
    nothing to count among"): a canary failing all 200 of its messages passed, even under
    --gate strict. Its failures count among every request of the version instead."""
    new = RouteKey(MESSAGING, "orders.created")
    failing, healthy = _beside_orders(new, 200), _beside_orders(new, 0)

    for verdict in (failing, healthy):
        assert [(r.check.key, r.check.metric) for r in verdict.metrics][-1] == (new, "error_rate")
        assert verdict.warnings == (
            "route 'orders.created': only version 1.1 has requests (200); only its errors are"
            " compared, as a share of all requests",
        )
    errors = next(m for m in to_json(failing)["metrics"] if m["route"] == "orders.created")
    assert errors["n"] == {"baseline": 400, "canary": 600}
    assert failing.verdict == "fail"
    assert exit_code(failing.verdict, strict=True) == 1
    assert healthy.verdict == "pass"


def test_unmatched_consumers_the_baseline_had_none_of_are_judged_by_their_errors() -> None:
    """CONSUMER spans without a destination (``_unmatched``) beside HTTP routes: the baseline
    consumed nothing, and a canary failing all 200 of its messages passed, with a warning that
    their errors were compared. They count among every request of the version instead."""
    unmatched = RouteKey(MESSAGING, "_unmatched")
    failing, healthy = _beside_orders(unmatched, 200), _beside_orders(unmatched, 0)

    errors = next(m for m in to_json(failing)["metrics"] if m["route"] == "_unmatched")
    assert (errors["name"], errors["n"]) == ("error_rate", {"baseline": 400, "canary": 600})
    assert failing.verdict == "fail"
    assert exit_code(failing.verdict, strict=True) == 1
    assert healthy.verdict == "pass"


def test_no_canary_traffic_is_inconclusive_not_an_error() -> None:
    verdict = judge(SUBJECT, {ORDERS: RouteSamples.of(lognormal(100, 1), 0)}, {})

    assert verdict.verdict == "inconclusive"
    assert verdict.reasons == ("no requests of canary version 1.1 in the window",)
    assert exit_code(verdict.verdict) == 4
    assert exit_code(verdict.verdict, strict=True) == 1


def test_every_number_in_the_document_is_finite() -> None:
    tiny = {ORDERS: RouteSamples(np.array([0.0, 0.0, 1e-9]), 0)}
    document = to_json(judge(SUBJECT, tiny, tiny))

    json.dumps(document, allow_nan=False)
    assert all(
        m["effect"]["estimate"] is None or math.isfinite(m["effect"]["estimate"])
        for m in document["metrics"]
    )


def _overflowing(n: int, slow_share: float) -> RouteSamples:
    """Prometheus' view of a route: 0.025-0.1 s spread in three buckets, the slow share above
    the last bound (10 s), where ``histogram_quantile`` puts it: all on that bound, tied."""
    bounds = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
    slow = round(n * slow_share)
    fast = n - slow
    counts = [0, 0, 0, fast // 3, fast // 3, fast - 2 * (fast // 3)] + [0] * 8 + [slow]
    return RouteSamples(spread_histogram(bounds, counts), 0)


@pytest.mark.parametrize("canary_share", [0.06, 0.08, 0.10])
def test_more_requests_tied_above_the_last_bucket_fail_the_tail(canary_share: float) -> None:
    """Once the pooled p95 lands on the tie, "strictly above" is nobody on either side: the tail
    test must still see 6, 8 or 10% against 3% (it passed 8% and 10% while failing 6%)."""
    verdict = judge(SUBJECT, {ORDERS: _overflowing(2000, 0.03)},
                    {ORDERS: _overflowing(2000, canary_share)})  # fmt: skip
    tail = metric(verdict, "tail_latency")
    assert tail["class"] == "fail" and verdict.verdict == "fail"
    lower, upper = tail["effect"]["interval"]
    assert lower <= tail["effect"]["estimate"] <= upper


@pytest.mark.parametrize(("canary_ms", "expected"), [(100, "fail"), (10, "pass")])
def test_constant_latencies_still_have_a_tail_verdict(canary_ms: int, expected: str) -> None:
    """Every request of a version takes the same time (a cache, a fixed sleep): all tie."""
    baseline = RouteSamples.of([0.05] * 400, 0)
    canary = RouteSamples.of([canary_ms / 1000] * 400, 0)
    tail = metric(judge(SUBJECT, {ORDERS: baseline}, {ORDERS: canary}), "tail_latency")
    assert tail["class"] == expected
