"""`tracekit canary --prometheus` on a service with many series stays within Prometheus' limits.

As found in review: the count of a version's series born in the window read every series of the
selector at 1,000 steps, holding about 3,000 samples per series (a subquery, two ``or`` and a
``+ 0`` at each step): 1,800 bucket series took 8.6 s of the 10 s ``--timeout``, and a mid-size
service's 17,000 passed Prometheus' default ``--query.max-samples`` (50 million), so every run
ended with exit 2. Where no born series reset in the window, each now counts from one read of its
samples. Here a Prometheus that lets a query hold at most ``MAX_SAMPLES`` samples (a thirtieth of
what the old query held for these 300 bucket series) must judge a canary born in the window, whose
series number ``ROUTES`` x 15 buckets, and count its requests exactly.

A canary that crash-loops still needs the steps, and they held 3,000 samples per series in one
query: 17,100 bucket series of such a canary (38 routes x 3 methods x 15 buckets x 10 pods) passed
the 50 million and ended with exit 2. The steps now read one bucket bound at a time, and only as
many as it takes to read each sample at a step of its own (288 here, not 1,000), so here the same
Prometheus must count a crash-looping canary's requests exactly too.

The series are written with ``promtool``'s backfill, as in test_prometheus_outage.py. Outside CI
a missing binary skips; with CI=true it fails.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conditions import need
from prometheus_server import prometheus_binary, prometheus_configured
from shop import CanaryRun, canary_json

from tracekit.canary.prometheus import samples_from_prometheus

HISTOGRAM = "http_server_request_duration_seconds"
BOUNDS = ("0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5",
          "5", "7.5", "10", "+Inf")  # fmt: skip
ROUTES = 20  # each with a bucket series per bound, for each version
SCRAPE = 15  # seconds between samples
WINDOW = 1800
BORN = 60  # the canary's first sample, after the window's start
PER_SCRAPE = 4  # requests each route serves between two scrapes, one of them failed
# the old query held 3,000 per bucket series: 900,000; a bound's 20 at 1,000 steps, 60,000
MAX_SAMPLES = 30_000
RESTART = 600  # seconds between the crash-looping canary's restarts
# its scrapes' worth of requests: each life counts from zero, its first scrape with one scrape's
# worth already (the pod served before Prometheus found it); two lives of 40, one of 37
LIVES = (RESTART // SCRAPE, RESTART // SCRAPE, (WINDOW - BORN - 2 * RESTART) // SCRAPE + 1)
# Another service, both of whose versions were deployed in the window's last 5 minutes, its
# canary restarting every minute: 4 scrapes' worth a life, and one of the last scrape, 21 in all.
YOUNG, YOUNG_RESTART, YOUNG_LIVES = 300, 60, 5 * 4 + 1
# A third, deployed 105 s before the end of a window that ends 100 s after a multiple of its
# 16th (as a window ending now mostly does), its canary restarting every 45 s: 8 scrapes, 8 in all.
FRESH, FRESH_PAST_PART, FRESH_RESTART, FRESH_LIVES = 105, 100, 45, 8
# Its first 60 s in a window of 90 s: 5 scrapes' worth, one restart among them.
SHORT_WINDOW, SHORT_BEFORE_END, SHORT_LIVES = 130, 40, 5
# A fourth, its baseline scraped every minute through the window, its canary every 15 s since
# 105 s before the end, restarting every 30 s: 8 scrapes' worth.
SLOW_BASELINE, LATE_CANARY, LATE_RESTART, LATE_LIVES = 60, 105, 30, 8


def _samples(version: str, first: int, last: int, restart: int | None = None,
             service: str = "shop", every: int = SCRAPE) -> list[str]:  # fmt: skip
    """``PER_SCRAPE`` requests per route between scrapes (``every`` seconds) from ``first`` to
    ``last`` (Unix seconds), a quarter failed, the successes spread over the buckets; with
    ``restart``, the counters fall back every ``restart`` seconds."""
    lines = []
    for route in range(ROUTES):
        labels = f'service_name="{service}",service_version="{version}",http_route="/r{route}"'
        for t in range(first, last + 1, every):
            scrapes = (t - first) // every
            if restart is not None:
                scrapes = (t - first) % restart // every + 1
            ok, failed = 3 * scrapes, scrapes
            for n, le in enumerate(BOUNDS, 1):
                counted = ok * n // len(BOUNDS)
                lines.append(f'{HISTOGRAM}_bucket{{{labels},http_response_status_code="200",'
                             f'le="{le}"}} {counted} {t}')  # fmt: skip
            lines.append(f'{HISTOGRAM}_count{{{labels},http_response_status_code="200"}} {ok} {t}')
            lines.append(
                f'{HISTOGRAM}_count{{{labels},http_response_status_code="500"}} {failed} {t}'
            )
    return lines


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CanaryRun]:
    """A Prometheus with a baseline scraped since an hour before the window, a canary born in
    it and one born in it that crash-loops, limited to ``MAX_SAMPLES`` per query."""
    binary = prometheus_binary()
    need(shutil.which("promtool") is not None, "the promtool binary (.ci/run installs prometheus)")
    directory = tmp_path_factory.mktemp("canary-scale")
    start = (int(time.time()) - 3 * WINDOW) // WINDOW * WINDOW
    end = start + WINDOW
    lines = _samples("1.0.0", start - 3600, end) + _samples("2.0.0", start + BORN, end)
    lines += _samples("3.0.0", start + BORN, end, restart=RESTART)
    lines += _samples("1.0.0", end - YOUNG, end, service="young")
    lines += _samples("2.0.0", end - YOUNG, end, restart=YOUNG_RESTART, service="young")
    fresh = (end + FRESH_PAST_PART - FRESH, end + FRESH_PAST_PART)
    lines += _samples("1.0.0", *fresh, service="fresh")
    lines += _samples("2.0.0", *fresh, restart=FRESH_RESTART, service="fresh")
    lines += _samples("1.0.0", start - 3600, end, service="slow", every=SLOW_BASELINE)
    lines += _samples("2.0.0", end - LATE_CANARY, end, restart=LATE_RESTART, service="slow")
    series = sorted(lines, key=lambda line: (line.split(" ")[0], int(line.split(" ")[2])))
    text = directory / "series.om"
    text.write_text(f"# TYPE {HISTOGRAM} histogram\n" + "\n".join(series) + "\n# EOF\n")
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(text),
         str(directory / "data")],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    config = f"global: {{scrape_interval: {SCRAPE}s}}\n"
    flags = [f"--query.max-samples={MAX_SAMPLES}"]
    with prometheus_configured(binary, directory, config, flags) as url:
        iso = [datetime.fromtimestamp(t, UTC).isoformat() for t in (start, end)]
        yield CanaryRun(url, Path("unused.db"), *iso)


def test_a_canary_born_in_the_window_is_judged_within_the_sample_limit(run: CanaryRun) -> None:
    code, document = canary_json(run, "1.0.0", "2.0.0", "--prometheus", run.prometheus)

    scrapes = (WINDOW - BORN) // SCRAPE  # its counters at the window's end
    assert document["canary"]["requests"] == ROUTES * PER_SCRAPE * scrapes
    errors = [m["summary"]["canary"] for m in document["metrics"] if m["name"] == "error_rate"]
    assert [route["errors"] for route in errors] == [scrapes] * ROUTES
    # the baseline's series existed: increase() extrapolates by a scrape's worth at most
    served = ROUTES * PER_SCRAPE * WINDOW // SCRAPE
    assert served <= document["baseline"]["requests"] <= served + ROUTES * PER_SCRAPE
    assert code in (0, 3, 4)


def test_a_crash_looping_canary_is_judged_within_the_sample_limit(run: CanaryRun) -> None:
    code, document = canary_json(run, "1.0.0", "3.0.0", "--prometheus", run.prometheus)

    assert document["canary"]["requests"] == ROUTES * PER_SCRAPE * sum(LIVES)
    errors = [m["summary"]["canary"] for m in document["metrics"] if m["name"] == "error_rate"]
    assert [route["errors"] for route in errors] == [sum(LIVES)] * ROUTES
    assert code in (0, 3, 4)


def test_a_version_typed_otherwise_names_the_versions_within_the_sample_limit(
    run: CanaryRun,
) -> None:
    code, document = canary_json(run, "1.0.0", "3.0", "--prometheus", run.prometheus)

    versions = "versions of shop with requests in the window: 1.0.0, 2.0.0, 3.0.0"
    assert versions in document["warnings"]
    assert code == 4


def test_a_service_deployed_late_in_the_window_is_read_at_steps_of_its_own_scrapes(
    run: CanaryRun,
) -> None:
    """Its steps are counted from how often its series are scraped where they are: counted over
    the whole window, 21 samples a series gave steps of 3 scrapes, and the growth before each
    restart within one was lost."""
    window = [round(datetime.fromisoformat(t).timestamp() * 1e9) for t in (run.start, run.end)]

    _, canary = samples_from_prometheus(run.prometheus, "young", ("1.0.0", "2.0.0"), *window)

    assert [s.requests for s in canary.values()] == [PER_SCRAPE * YOUNG_LIVES] * ROUTES
    assert [s.errors for s in canary.values()] == [YOUNG_LIVES] * ROUTES


def test_a_service_younger_than_two_parts_is_read_at_steps_of_its_own_scrapes(
    run: CanaryRun,
) -> None:
    """A part its series were born in holds fewer samples than their scrapes give: the last 16th
    before this window's end held one of them, and the steps were 28 s for scrapes every 15 s."""
    window = [
        round((datetime.fromisoformat(t).timestamp() + FRESH_PAST_PART) * 1e9)
        for t in (run.start, run.end)
    ]

    _, canary = samples_from_prometheus(run.prometheus, "fresh", ("1.0.0", "2.0.0"), *window)

    assert [s.requests for s in canary.values()] == [PER_SCRAPE * FRESH_LIVES] * ROUTES
    assert [s.errors for s in canary.values()] == [FRESH_LIVES] * ROUTES


def test_a_canary_scraped_more_often_than_its_baseline_is_read_at_steps_of_its_own_scrapes(
    run: CanaryRun,
) -> None:
    """Its steps are counted from its own series: from the service's, the baseline's minute
    between scrapes gave steps longer than the canary's 15 s."""
    window = [round(datetime.fromisoformat(t).timestamp() * 1e9) for t in (run.start, run.end)]

    _, canary = samples_from_prometheus(run.prometheus, "slow", ("1.0.0", "2.0.0"), *window)

    assert [s.requests for s in canary.values()] == [PER_SCRAPE * LATE_LIVES] * ROUTES
    assert [s.errors for s in canary.values()] == [LATE_LIVES] * ROUTES


def test_a_short_window_is_read_at_steps_of_its_own_scrapes(run: CanaryRun) -> None:
    """A 90-second window's 16ths are shorter than a scrape interval: one sample each at most,
    which 64 steps read one at a time (1,000 held 60,000 samples a query, twice the limit)."""
    fresh_end = datetime.fromisoformat(run.end).timestamp() + FRESH_PAST_PART
    window = [round((fresh_end - delta) * 1e9) for delta in (SHORT_WINDOW, SHORT_BEFORE_END)]

    _, canary = samples_from_prometheus(run.prometheus, "fresh", ("1.0.0", "2.0.0"), *window)

    assert [s.requests for s in canary.values()] == [PER_SCRAPE * SHORT_LIVES] * ROUTES
    assert [s.errors for s in canary.values()] == [SHORT_LIVES] * ROUTES
