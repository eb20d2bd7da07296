"""`tracekit canary --prometheus` counts what a series held when Prometheus first scraped it.

Every series of a canary is new (a new ``service_version``), and each 5xx series appears with its
first failure. ``increase()`` counts nothing for the jump from "no series" to the first scraped
value, so failures a pod served before its first scrape went uncounted, and a series that only
ever saw one failure counted none. Here, as in the review that found it: Prometheus scrapes every
second; the canary fails 15 payments while it warms up, before Prometheus' first scrape, then
serves 300 as the baseline does. The window starts before either version served anything, as when
it covers the whole rollout. Outside CI a missing ``prometheus`` binary skips; with CI=true it
fails.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conditions import wait_for
from loopback import UNREACHABLE
from prometheus_server import prometheus_binary, running_prometheus
from shop import CanaryRun as Run
from shop import canary_json, metric_on, pay_in_turns, scraped_requests, start_shop

APP = Path(__file__).parent / "apps" / "canary_shop.py"
BASELINE, CANARY = "1.0.0", "2.0.0"
WARM_UP_FAILURES = 15
PAYMENTS = 300  # per version, after the warm-up
FAIL_EVERY = 1000  # the canary fails /pay/1000, /pay/2000, ... (the warm-up), never /pay/1..300
PAY = "/pay/{n}"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    binary = prometheus_binary()
    directory = tmp_path_factory.mktemp("canary-new-series")
    store = directory / "tracekit.db"
    start = datetime.now(UTC)
    shops = [
        start_shop(APP, BASELINE, store, 0.0, 0),
        start_shop(APP, CANARY, store, 0.0, FAIL_EVERY),
    ]
    try:
        with httpx.Client(timeout=20) as client:
            for shop in shops:
                shop.wait_up()
            canary = shops[1].url
            numbers = range(FAIL_EVERY, FAIL_EVERY * (WARM_UP_FAILURES + 1), FAIL_EVERY)
            warm_up = [client.get(f"{canary}/pay/{n}").status_code for n in numbers]
            assert warm_up == [500] * WARM_UP_FAILURES
            targets = [f"127.0.0.1:{shop.metrics_port}" for shop in shops]
            with running_prometheus(binary, directory, "shop", targets, interval="1s") as url:
                failed = f'service_version="{CANARY}", http_response_status_code="500"'
                wait_for(
                    lambda: scraped_requests(url, failed) == WARM_UP_FAILURES,
                    30,
                    "warm-up scraped",
                    ignoring=UNREACHABLE,
                )
                pay_in_turns(client, shops, PAYMENTS)
                paid = f'http_route="{PAY}"'
                total = 2 * PAYMENTS + WARM_UP_FAILURES
                wait_for(
                    lambda: scraped_requests(url, paid) == total,
                    30,
                    "payments scraped",
                    ignoring=UNREACHABLE,
                )
                time.sleep(1.5)
                yield Run(url, store, start.isoformat(), datetime.now(UTC).isoformat())
    finally:
        for shop in shops:
            shop.stop()


def _canary(run: Run, *source: str) -> tuple[int, dict[str, Any]]:
    return canary_json(run, BASELINE, CANARY, *source)


def _errors_on_pay(document: dict[str, Any]) -> dict[str, Any]:
    return metric_on(document, "error_rate", PAY)


def test_failures_before_the_first_scrape_fail_the_canary(run: Run) -> None:
    code, document = _canary(run, "--prometheus", run.prometheus)

    errors = _errors_on_pay(document)
    assert errors["summary"]["canary"]["errors"] == WARM_UP_FAILURES
    assert errors["summary"]["baseline"]["errors"] == 0
    assert errors["class"] == "fail"
    assert (document["verdict"], code) == ("fail", 1)


def test_prometheus_counts_the_requests_the_store_holds(run: Run) -> None:
    """Every series here was born inside the window: each counts from zero, plus at most what
    ``increase()`` extrapolates to the window's edges (a scrape interval's traffic at each)."""
    expected = {"baseline": PAYMENTS, "canary": PAYMENTS + WARM_UP_FAILURES}

    def stored_in_full() -> dict[str, Any] | None:  # spans reach the store in batches
        _, document = _canary(run, "--store", str(run.store))
        return document if _errors_on_pay(document)["n"] == expected else None

    stored = wait_for(stored_in_full, 60, "every request in the store", ignoring=(StopIteration,))
    _, scraped = _canary(run, "--prometheus", run.prometheus)

    store, prometheus = _errors_on_pay(stored)["n"], _errors_on_pay(scraped)["n"]
    for version in ("baseline", "canary"):
        assert store[version] <= prometheus[version] <= store[version] + 2 * 60, version
    assert stored["verdict"] == scraped["verdict"] == "fail"
