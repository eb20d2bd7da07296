"""Versions timed by clocks of different steps: one version's SDK read a millisecond clock, the
other's timed to the nanosecond, both serving the very same latencies.

The millisecond clock ties its version's requests on whole milliseconds. The tail test's pooled
p95 lands on such a tie, and a canary timed finer than its baseline had more requests strictly
above it for no other reason; ranked against a canary timed by the coarser clock, a baseline
timed to the nanosecond looked faster. Either way an identical canary read as significantly
slower.

Every window's requests are drawn with a fixed seed and written into a real store; each window's
verdict reads them back, as ``tracekit canary --start --end`` would.
"""

from __future__ import annotations

import collections
import math
import random
from pathlib import Path

import pytest

from tracekit.canary import Subject, judge, samples_from_store
from tracekit.records import SpanRecord
from tracekit.store import Store

SERVICE, BASELINE, CANARY = "cache", "2.0.0", "2.1.0"
T0 = 1_750_000_000_000_000_000
WINDOW_NS = 60 * 10**9
WINDOWS = 40
REQUESTS = 3_000  # per version and window
MS = 10**6


def _spans(
    version: str, window: int, rng: random.Random, median_s: float, *, ms_clock: bool
) -> list[SpanRecord]:
    spans = []
    for i in range(REQUESTS):
        start = T0 + window * WINDOW_NS + rng.randrange(WINDOW_NS - 10**9)
        end = start + int(median_s * rng.lognormvariate(0, 0.5) * 1e9)
        if ms_clock:  # both ends read from a clock that ticks every millisecond
            start, end = start // MS * MS, end // MS * MS
        number = (window * 2 + (version == CANARY)) * REQUESTS + i + 1
        spans.append(SpanRecord(
            f"{number:032x}", f"{number:016x}", None, SERVICE, "GET /item", "SERVER", start, end,
            attributes={"http.route": "/item", "http.response.status_code": 200},
            resource={"service.name": SERVICE}, service_version=version,
        ))  # fmt: skip
    return spans


def _classes(
    directory: Path, median_s: float, ms_clocked: str
) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """Per window, the classes of the latency and tail checks and the verdict."""
    path = directory / "tracekit.db"
    with Store(path) as writer:
        for window in range(WINDOWS):
            rng = random.Random(window)
            for version in (BASELINE, CANARY):
                clocked = version == ms_clocked
                writer.write_spans(_spans(version, window, rng, median_s, ms_clock=clocked))
    worse: collections.Counter[str] = collections.Counter()
    verdicts: collections.Counter[str] = collections.Counter()
    with Store(path) as reader:
        for window in range(WINDOWS):
            start = T0 + window * WINDOW_NS
            span = (start, start + WINDOW_NS)
            samples = samples_from_store(reader, SERVICE, (BASELINE, CANARY), *span)
            verdict = judge(Subject(SERVICE, BASELINE, CANARY, *span, "store"), *samples)
            assert verdict.canary_requests == verdict.baseline_requests == REQUESTS
            for result in verdict.metrics:
                worse[result.check.metric] += result.classification in ("fail", "marginal")
            verdicts[verdict.verdict] += 1
    return worse, verdicts


def _at_most(windows: int, rate: float, chance: float) -> int:
    """The most of ``windows`` a binomial count at ``rate`` reaches: it goes past that with a
    chance of at most ``chance``."""
    beyond, k = 1.0, 0  # beyond: P(count > k - 1)
    while beyond > chance:
        beyond -= math.comb(windows, k) * rate**k * (1 - rate) ** (windows - k)
        k += 1
    return k - 1


# A check calls an identical canary worse at most at its error budget, 5% of windows; more than
# this many of 40 happens with a chance under 1 in 200 at that rate.
LIMIT = _at_most(WINDOWS, 0.05, 0.005)  # 6


@pytest.mark.parametrize(
    ("median_s", "ms_clocked"),
    [
        pytest.param(0.003, BASELINE, id="baseline-on-a-ms-clock"),  # tail: 21 of 40 before
        pytest.param(0.001, CANARY, id="canary-on-a-ms-clock"),  # latency: 36 of 40 before
    ],
)
def test_an_identical_canary_timed_by_another_clock_is_not_slower(
    tmp_path: Path, median_s: float, ms_clocked: str
) -> None:
    worse, verdicts = _classes(tmp_path, median_s, ms_clocked)

    assert worse["latency"] <= LIMIT, dict(worse)
    assert worse["tail_latency"] <= LIMIT, dict(worse)
    assert verdicts["pass"] >= WINDOWS - 2 * LIMIT, dict(verdicts)


def test_a_slower_canary_on_a_ms_clock_is_not_called_within_tolerance(tmp_path: Path) -> None:
    """Both versions timed by a millisecond clock, a typical request of about a millisecond,
    the canary 1.3 times slower: read as ties, the shift and its interval closed on the grid's
    ratios, "1x (90% interval 1x to 1x): significantly slower, but within the 1.2x tolerance"
    (marginal) in 40 windows of 40."""
    path = tmp_path / "tracekit.db"
    with Store(path) as writer:
        for window in range(WINDOWS):
            rng = random.Random(window)
            writer.write_spans(_spans(BASELINE, window, rng, 0.001, ms_clock=True))
            writer.write_spans(_spans(CANARY, window, rng, 0.0013, ms_clock=True))
    latency: collections.Counter[str] = collections.Counter()
    with Store(path) as reader:
        for window in range(WINDOWS):
            span = (T0 + window * WINDOW_NS, T0 + (window + 1) * WINDOW_NS)
            samples = samples_from_store(reader, SERVICE, (BASELINE, CANARY), *span)
            verdict = judge(Subject(SERVICE, BASELINE, CANARY, *span, "store"), *samples)
            (result,) = [r for r in verdict.metrics if r.check.metric == "latency"]
            latency[result.classification] += 1

    assert latency == {"fail": WINDOWS}, dict(latency)
