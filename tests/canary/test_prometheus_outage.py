"""`tracekit canary --prometheus` when a version's series go unscraped for longer than 5 minutes.

A series born in the window is counted from zero, held at its last value while it has no sample
(a failed scrape). As found in review: held only Prometheus' 5-minute lookback, a canary whose
target went unscraped for 10 minutes (Prometheus restarted, the pod unreachable) read as 0 after
5 and back at its count when scraped again: a restart, so its 1,125 requests before the outage
were counted twice (4,665 requests for 3,540, and its failures twice). A real pod restart inside
the outage, and a canary deployed before, rolled back and deployed again, must still count right.
And a baseline unscraped across the window's start (no sample in the 5 minutes before it) was
read as born in the window and counted from 0: its two hours before the window were in it
(10,800 requests for 3,600).

The series are written with ``promtool``'s backfill into a real Prometheus' storage: an outage of
minutes cannot be waited for in a test. Outside CI a missing binary skips; with CI=true it fails.
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

HISTOGRAM = "http_server_request_duration_seconds"
BASELINE = "1.0.0"
SCRAPE = 15  # seconds between samples
WINDOW = 3600
BORN = 60  # the canaries' first sample, after the window's start
OUTAGE = (1200, 1800)  # no sample of the outage canaries in these seconds of the window
ACROSS_START = (-310, 240)  # nor of the baseline 1.1.0 in these
LAST_BEFORE_START = 315  # seconds before the window: its last sample there
FAIL_EVERY = 100  # each version fails one request in 100 (each failure its own series)


def _samples(version: str, first: int, last: int, *, gap: tuple[int, int] | None = None,
             restart: int | None = None) -> list[str]:  # fmt: skip
    """One request a second from ``first`` to ``last`` (Unix seconds), scraped every 15 s but in
    ``gap``; counters back at 0 at ``restart``."""
    lines = []
    for t in range(first, last + 1, SCRAPE):
        if gap is not None and gap[0] <= t < gap[1]:
            continue
        served = t - first if restart is None or t < restart else t - restart
        failed = served // FAIL_EVERY
        route = f'service_name="shop",service_version="{version}",http_route="/pay"'
        ok = f'{route},http_response_status_code="200"'
        lines += [f'{HISTOGRAM}_bucket{{{ok},le="{le}"}} {served - failed} {t}'
                  for le in ("0.1", "+Inf")]  # fmt: skip
        lines.append(f"{HISTOGRAM}_count{{{ok}}} {served - failed} {t}")
        bad = f'{route},http_response_status_code="500"'
        lines += [f'{HISTOGRAM}_bucket{{{bad},le="{le}"}} {failed} {t}' for le in ("0.1", "+Inf")]
        lines.append(f"{HISTOGRAM}_count{{{bad}}} {failed} {t}")
    return lines


def _backfill(directory: Path, start: int) -> None:
    """Write every version's series into ``directory / "data"``, as Prometheus stores them."""
    need(shutil.which("promtool") is not None, "the promtool binary (.ci/run installs prometheus)")
    inside = (start + OUTAGE[0], start + OUTAGE[1])
    born, end = start + BORN, start + WINDOW
    lines = _samples(BASELINE, start - 600, end)
    across = (start + ACROSS_START[0], start + ACROSS_START[1])
    lines += _samples("1.1.0", start - 7200, end, gap=across)
    lines += _samples("2.0.0", born, end, gap=inside)  # unscraped for 10 minutes
    lines += _samples("3.0.0", born, end, gap=inside, restart=inside[1])  # and restarted
    lines += _samples("4.0.0", start - 1800, start - 600) + _samples("4.0.0", born, end)
    series = sorted(lines, key=lambda line: (line.split(" ")[0], int(line.split(" ")[2])))
    text = directory / "series.om"
    text.write_text(f"# TYPE {HISTOGRAM} histogram\n" + "\n".join(series) + "\n# EOF\n")
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(text),
         str(directory / "data")],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A Prometheus holding the series; yields its URL and the window's start (Unix seconds)."""
    binary = prometheus_binary()
    directory = tmp_path_factory.mktemp("canary-outage")
    start = (int(time.time()) - 3 * WINDOW) // WINDOW * WINDOW
    _backfill(directory, start)
    with prometheus_configured(binary, directory, "global: {scrape_interval: 15s}\n") as url:
        yield url, start


def _iso(unix_seconds: int) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).isoformat()


def _canary(prometheus: tuple[str, int], version: str) -> dict[str, int]:
    url, start = prometheus
    run = CanaryRun(url, Path("unused.db"), _iso(start), _iso(start + WINDOW))
    _, doc = canary_json(run, BASELINE, version, "--prometheus", url)
    metric = next(m for m in doc["metrics"] if m["name"] == "error_rate")
    return {"requests": doc["canary"]["requests"], "errors": metric["summary"]["canary"]["errors"]}


@pytest.mark.parametrize(
    "version,served",
    [("2.0.0", WINDOW - BORN),  # one request a second from its birth, outage or not
     ("3.0.0", OUTAGE[0] - SCRAPE - BORN + WINDOW - OUTAGE[1]),  # its counters restarted
     ("4.0.0", WINDOW - BORN)],  # its first deployment's count is not the window's
)  # fmt: skip
def test_an_unscraped_canary_counts_each_request_once(
    prometheus: tuple[str, int], version: str, served: int
) -> None:
    found = _canary(prometheus, version)
    assert found["requests"] == served
    if version != "3.0.0":
        assert found["errors"] == served // FAIL_EVERY


def test_a_baseline_unscraped_across_the_start_counts_from_its_last_value_before_it(
    prometheus: tuple[str, int],
) -> None:
    """Its requests of the outage's minutes before the window cannot be told apart from
    those inside: they are counted in, as the first scrape after an outage puts them."""
    url, start = prometheus
    run = CanaryRun(url, Path("unused.db"), _iso(start), _iso(start + WINDOW))
    _, doc = canary_json(run, "1.1.0", "3.0.0", "--prometheus", url)
    assert doc["baseline"]["requests"] == WINDOW + LAST_BEFORE_START
