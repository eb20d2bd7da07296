"""`tracekit canary --prometheus` when the two versions' histograms have different buckets.

A release that upgrades tracekit, or configures its own histograms, can bring other bucket bounds
than the version it replaces. Here both versions served exactly the same 3,000 durations; the
baseline's histogram has extra bounds between tracekit's, the canary's has tracekit's own. A real
Prometheus scrapes both (prometheus_client on loopback). Inside a bucket the durations are only a
guess (spread evenly), and the same requests guessed on different buckets are not the same
sample: as found in review, the tail test failed this identical canary every time. Outside CI a
missing ``prometheus`` binary skips; with CI=true it fails.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conditions import wait_for
from loopback import UNREACHABLE, free_port
from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_server import prometheus_binary, running_prometheus
from shop import CanaryRun, canary_json, scraped_requests

from tracekit.metrics import DURATION_BUCKETS

BASELINE, CANARY, SLOWER, DISJOINT = "1.0.0", "2.0.0", "2.1.0", "2.2.0"
ROUTE = "/orders/{order_id}"
REQUESTS = 3000
LABELS = ("service_name", "service_version", "http_request_method", "http_route",
          "http_response_status_code", "error_type")  # fmt: skip
# a finer layout: every one of tracekit's bounds, and more between them
FINER = tuple(sorted({*DURATION_BUCKETS, 0.0075, 0.015, 0.02, 0.035, 0.04, 0.06, 0.065, 0.085,
                      0.09, 0.125, 0.15, 0.175, 0.2, 0.3, 0.4}))  # fmt: skip
POWERS_OF_TWO = tuple(0.004 * 2**k for k in range(12))  # 4 ms to 8.192 s: no bound of FINER


def _durations() -> list[float]:
    """Lognormal around 50 ms (sigma 0.5), the same for both versions."""
    rng = random.Random(7)
    return [0.05 * rng.lognormvariate(0, 0.5) for _ in range(REQUESTS)]


def _exposed(version: str, buckets: tuple[float, ...], durations: list[float]) -> tuple[int, Any]:
    """One version's histogram on ``buckets``, every duration observed, served on a free port."""
    registry = CollectorRegistry()
    histogram = Histogram("http_server_request_duration_seconds", "Server request duration",
                          LABELS, buckets=buckets, registry=registry)  # fmt: skip
    observed = histogram.labels("shop", version, "GET", ROUTE, "200", "")
    for seconds in durations:
        observed.observe(seconds)
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    return port, server


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CanaryRun]:
    binary = prometheus_binary()
    directory = tmp_path_factory.mktemp("canary-layouts")
    start = datetime.now(UTC)
    durations = _durations()
    exposed = [
        _exposed(BASELINE, FINER, durations),
        _exposed(CANARY, DURATION_BUCKETS, durations),
        _exposed(SLOWER, DURATION_BUCKETS, [1.5 * seconds for seconds in durations]),
        _exposed(DISJOINT, POWERS_OF_TWO, durations),
    ]
    try:
        targets = [f"127.0.0.1:{port}" for port, _ in exposed]
        with running_prometheus(binary, directory, "shop", targets, interval="200ms") as url:
            wait_for(
                lambda: scraped_requests(url, f'http_route="{ROUTE}"') == len(exposed) * REQUESTS,
                30,
                "both versions scraped",
                ignoring=UNREACHABLE,
            )
            yield CanaryRun(url, Path(directory), start.isoformat(), datetime.now(UTC).isoformat())
    finally:
        for _, server in exposed:
            server.shutdown()
            server.server_close()


def test_the_same_requests_on_other_buckets_do_not_fail(run: CanaryRun) -> None:
    code, document = canary_json(run, BASELINE, CANARY, "--prometheus", run.prometheus)

    metrics = {m["name"]: m for m in document["metrics"]}
    assert metrics["latency"]["n"] == {"baseline": REQUESTS, "canary": REQUESTS}
    assert (document["verdict"], code) in (("pass", 0), ("inconclusive", 4)), document["reasons"]
    for name in ("latency", "tail_latency"):
        assert metrics[name]["class"] in ("pass", "inconclusive"), name
        assert metrics[name]["effect"]["estimate"] == 1.0, name  # the same requests


def test_a_slower_canary_on_other_buckets_still_fails(run: CanaryRun) -> None:
    code, document = canary_json(run, BASELINE, SLOWER, "--prometheus", run.prometheus)

    metrics = {m["name"]: m for m in document["metrics"]}
    assert metrics["latency"]["class"] == "fail"
    assert metrics["latency"]["effect"]["estimate"] > 1.2, metrics["latency"]["effect"]
    assert (document["verdict"], code) == ("fail", 1)


def test_buckets_without_a_bound_in_common_cannot_tell(run: CanaryRun) -> None:
    code, document = canary_json(run, BASELINE, DISJOINT, "--prometheus", run.prometheus)

    metrics = {m["name"]: m for m in document["metrics"]}
    for name in ("latency", "tail_latency"):
        assert metrics[name]["class"] == "inconclusive", name
        assert "buckets are too coarse" in metrics[name]["explanation"], name
    assert (document["verdict"], code) == ("inconclusive", 4)
