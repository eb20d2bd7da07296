"""`tracekit canary --prometheus` counts a new series from zero even when its pod restarts.

A canary's series are born inside the window, and a canary that crash-loops restarts with the
same labels: its counters fall back to zero and its 5xx series vanishes until the next failure.
Here the canary fails 15 payments before Prometheus' first scrape, restarts on the same ports
(a container restart keeps its pod's scrape target), fails one more, then serves 300 payments as
the baseline does. The window starts before either version served anything. Outside CI a missing
``prometheus`` binary skips; with CI=true it fails.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from conditions import wait_for
from loopback import UNREACHABLE
from prometheus_server import prometheus_binary, running_prometheus
from shop import CanaryRun as Run
from shop import Shop, canary_json, metric_on, pay_in_turns, scraped_requests, start_shop

APP = Path(__file__).parent / "apps" / "canary_shop.py"
BASELINE, CANARY = "1.0.0", "2.0.0"
BEFORE_RESTART = 15  # failed payments the canary served before its first scrape
PAYMENTS = 300  # per version, after the restart
FAIL_EVERY = 1000  # the canary fails /pay/1000, /pay/2000, ..., never /pay/1..300
PAY = "/pay/{n}"


def _fail_payments(client: httpx.Client, shop: Shop, count: int) -> None:
    numbers = range(FAIL_EVERY, FAIL_EVERY * (count + 1), FAIL_EVERY)
    assert [client.get(f"{shop.url}/pay/{n}").status_code for n in numbers] == [500] * count


def _restart(shop: Shop, store: Path) -> Shop:
    """The same version again on the same ports: a container restart, its counters at zero."""
    shop.stop()
    port = int(shop.url.rsplit(":", 1)[1])
    again = start_shop(APP, shop.version, store, 0.0, FAIL_EVERY, ports=(port, shop.metrics_port))
    again.wait_up()
    return again


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    binary = prometheus_binary()
    directory = tmp_path_factory.mktemp("canary-restarts")
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
            _fail_payments(client, shops[1], BEFORE_RESTART)
            targets = [f"127.0.0.1:{shop.metrics_port}" for shop in shops]
            with running_prometheus(binary, directory, "shop", targets, interval="200ms") as url:
                failed = f'service_version="{CANARY}", http_response_status_code="500"'
                wait_for(
                    lambda: scraped_requests(url, failed) == BEFORE_RESTART,
                    30,
                    "failures before the restart scraped",
                    ignoring=UNREACHABLE,
                )
                shops[1] = _restart(shops[1], store)
                _fail_payments(client, shops[1], 1)
                wait_for(
                    lambda: scraped_requests(url, failed) == 1,
                    30,
                    "the failure after the restart scraped",
                    ignoring=UNREACHABLE,
                )
                pay_in_turns(client, shops, PAYMENTS)
                paid = f'http_route="{PAY}", http_response_status_code="200"'
                wait_for(
                    lambda: scraped_requests(url, paid) == 2 * PAYMENTS,
                    30,
                    "payments scraped",
                    ignoring=UNREACHABLE,
                )
                time.sleep(1.5)
                yield Run(url, store, start.isoformat(), datetime.now(UTC).isoformat())
    finally:
        for shop in shops:
            shop.stop()


def test_failures_before_a_restart_still_count(run: Run) -> None:
    code, document = canary_json(run, BASELINE, CANARY, "--prometheus", run.prometheus)

    errors = metric_on(document, "error_rate", PAY)
    assert errors["summary"]["canary"]["errors"] == BEFORE_RESTART + 1
    assert errors["summary"]["baseline"]["errors"] == 0
    # every series was born in the window: counted from zero, with nothing extrapolated
    assert errors["n"] == {"baseline": PAYMENTS, "canary": BEFORE_RESTART + 1 + PAYMENTS}
    assert (document["verdict"], code) == ("fail", 1)
