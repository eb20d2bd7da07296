"""`tracekit canary --prometheus` when a scrape failed just before the window's start.

A scrape that fails (a timeout, a pod too busy to answer) marks every series of its target stale
until the next one succeeds. As found in review: the baseline had served 1,000 requests before
the window, one scrape of it failed just before the window's start, and it served 300 more
inside; read as "born in the window" and counted from zero, the baseline had 1,300 requests in
the window. So was a canary whose series were born in the window and a scrape of it failed
inside: read as 0 while stale and back, it looked like a restart and counted its 300 twice. Here
each version's histogram is served by prometheus_client behind a small HTTP
server that can be told to answer 503, and a real Prometheus scrapes both. Outside CI a missing
``prometheus`` binary skips; with CI=true it fails.
"""

from __future__ import annotations

import http.server
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conditions import wait_for
from loopback import UNREACHABLE, serve_in_thread
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_server import instant, prometheus_binary, running_prometheus
from shop import CanaryRun, canary_json, metric_on

from tracekit.metrics import DURATION_BUCKETS

BASELINE, CANARY = "1.0.0", "2.0.0"
ROUTE = "/pay"
BEFORE = 1000  # baseline requests served before the window
INSIDE = 300  # requests of each version served inside it
SCRAPES = 20  # of the baseline in the window, 200 ms apart
LABELS = ("service_name", "service_version", "http_request_method", "http_route",
          "http_response_status_code", "error_type")  # fmt: skip


class Target:
    """One version's histogram as a scrape target; ``failing`` makes scrapes get a 503."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.failing = False
        self.registry = CollectorRegistry()
        self.histogram = Histogram(
            "http_server_request_duration_seconds", "Request duration", LABELS,
            buckets=DURATION_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._stop = serve_in_thread(self.server)
        self.address = f"127.0.0.1:{self.server.server_port}"

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"unavailable" if target.failing else generate_latest(target.registry)
                self.send_response(503 if target.failing else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def serve(self, requests: int, seed: int) -> None:
        """``requests`` successful requests, lognormal around 50 ms."""
        rng = random.Random(seed)
        observed = self.histogram.labels("shop", self.version, "GET", ROUTE, "200", "")
        for _ in range(requests):
            observed.observe(0.05 * rng.lognormvariate(0, 0.5))

    def close(self) -> None:
        self._stop()


def _scraped(url: str, version: str) -> float:
    found = instant(
        url, f'sum(http_server_request_duration_seconds_count{{service_version="{version}"}})'
    )
    return float(found[0]["value"][1]) if found else 0.0


def _up(url: str, target: Target) -> float | None:
    found = instant(url, f'up{{instance="{target.address}"}}')
    return float(found[0]["value"][1]) if found else None


def _scrapes_since(url: str, target: Target, start: datetime) -> float:
    """How many times Prometheus scraped ``target`` since ``start``."""
    millis = int((datetime.now(UTC) - start).total_seconds() * 1000)
    found = instant(url, f'count_over_time(up{{instance="{target.address}"}}[{millis}ms])')
    return float(found[0]["value"][1]) if found else 0.0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CanaryRun]:
    binary = prometheus_binary()
    directory = tmp_path_factory.mktemp("canary-failed-scrape")
    baseline, canary = Target(BASELINE), Target(CANARY)
    baseline.serve(BEFORE, seed=1)
    try:
        addresses = [baseline.address, canary.address]
        with running_prometheus(binary, directory, "shop", addresses, interval="200ms") as url:
            wait_for(lambda: _scraped(url, BASELINE) == BEFORE, 30, "the baseline scraped",
                     ignoring=UNREACHABLE)  # fmt: skip
            baseline.failing = True
            wait_for(lambda: _up(url, baseline) == 0, 30, "a failed scrape of the baseline")
            start = datetime.now(UTC)  # while its series are stale
            baseline.failing = False
            wait_for(lambda: _up(url, baseline) == 1, 30, "the baseline scraped again")
            baseline.serve(INSIDE, seed=2)
            canary.serve(INSIDE, seed=3)
            wait_for(
                lambda: (
                    (_scraped(url, BASELINE), _scraped(url, CANARY)) == (BEFORE + INSIDE, INSIDE)
                ),
                30,
                "the requests inside the window scraped",
            )
            # one failed scrape of the canary inside the window, whose series were born in it
            canary.failing = True
            wait_for(lambda: _up(url, canary) == 0, 30, "a failed scrape of the canary")
            canary.failing = False
            wait_for(lambda: _up(url, canary) == 1, 30, "the canary scraped again")
            # a window of many scrapes: increase() extrapolates to its edges by a small share
            wait_for(lambda: _scrapes_since(url, baseline, start) >= SCRAPES, 30, "more scrapes")
            yield CanaryRun(url, Path(directory), start.isoformat(), datetime.now(UTC).isoformat())
    finally:
        baseline.close()
        canary.close()


def test_requests_before_the_window_are_not_counted_in_it(run: CanaryRun) -> None:
    code, document = canary_json(run, BASELINE, CANARY, "--prometheus", run.prometheus)

    latency = metric_on(document, "latency", ROUTE)
    assert latency["n"]["canary"] == INSIDE
    # increase() extrapolates the baseline's 300 to the window's edges, by up to a scrape
    # interval each of 20; the 1,000 served before the window are not counted in it
    assert INSIDE <= latency["n"]["baseline"] < 1.2 * INSIDE
    assert document["baseline"]["requests"] == latency["n"]["baseline"]
    assert code in (0, 1, 3, 4)
