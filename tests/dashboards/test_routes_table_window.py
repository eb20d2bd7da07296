"""The endpoint dashboard's "Routes at a glance" table over the selected time range.

A route's first 500 (on this pod, since it started) starts a series of its own, and rate()
counts nothing for the step from no series to its first value: a route that failed once in
the range showed an error ratio of 0. The table's ratios and percentiles count such a series
from zero, as the canary dashboard does (dashboards/README.md).

One version of the shop (tests/dashboards/apps/dash_shop.py) runs as a subprocess, scraped
every second by a real Prometheus (no Grafana here: the table's query is run as Grafana sends
it, one instant query at the range's end).
"""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path

import httpx
import pytest
from conditions import wait_for
from grafana_model import ALL, interpolate, load, panels, variables
from loopback import UNREACHABLE
from prometheus_server import instant, prometheus_binary, running_prometheus
from shop import start_shop

APP = Path(__file__).parent / "apps" / "dash_shop.py"
REQUESTS = 20
SCRAPED = "sum(http_server_request_duration_seconds_count)"


def _scraped(url: str, expected: float) -> bool:
    return [float(sample["value"][1]) for sample in instant(url, SCRAPED)] == [expected]


def test_a_route_that_failed_once_in_the_range_shows_its_error_ratio(tmp_path: Path) -> None:
    shop = start_shop(APP, "1.0.0")
    try:
        scrape = [f"127.0.0.1:{shop.metrics_port}"]
        with (
            running_prometheus(prometheus_binary(), tmp_path, "shop", scrape) as url,
            httpx.Client(base_url=shop.url, timeout=10) as client,
        ):
            warm_up = partial(client.get, "/orders/warm-up")  # the route's 200 series exists
            wait_for(warm_up, 20, "the shop to answer", ignoring=UNREACHABLE)
            wait_for(partial(_scraped, url, 1), 20, "a first scrape", ignoring=UNREACHABLE)
            start = time.time()
            for i in range(REQUESTS):
                client.get(f"/orders/fail-{i}" if i == REQUESTS // 2 else f"/orders/ok-{i}")
                time.sleep(0.1)
            wait_for(partial(_scraped, url, 1 + REQUESTS), 20, "every request scraped")
            at = time.time()
            board = load("endpoint.json")
            panel = next(p for p in panels(board) if p["title"] == "Routes at a glance")
            target = next(t for t in panel["targets"] if t["refId"] == "B")  # error ratio
            chosen = {"service": ["shop"], "version": [ALL], "route": [ALL], "method": [ALL]}
            expr = target["expr"].replace("$__range", f"{math.ceil(at - start)}s")
            shown = instant(url, interpolate(expr, variables(board), chosen), at)
    finally:
        shop.stop()
    ratios = {sample["metric"]["http_route"]: float(sample["value"][1]) for sample in shown}
    # increase() extrapolates the route's 200 series to the range's edges, up to a scrape
    # interval each side of a range of a few seconds: 15 to 27 of its 19 requests
    assert ratios == {"/orders/{order_id}": pytest.approx(1 / REQUESTS, abs=0.025)}
