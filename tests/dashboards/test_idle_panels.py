"""Every panel once the traffic has stopped: no data, not NaN.

A ratio of two rates is 0 / 0 and a ``histogram_quantile`` of buckets that did not grow is NaN
once a service has been idle for the panel's window (a night, a canary not yet given traffic).
Prometheus answers NaN, which Grafana shows as "NaN" in a stat panel and a table cell (its
"last non-null" reductions keep NaN: grafana/grafana#59862) and draws as a point in a time
series. The dashboards drop those samples instead: the panels show no data there.

Two versions of the shop (tests/dashboards/apps/dash_shop.py) serve traffic and then stop; a
real Prometheus scrapes them every second. No collector binary runs here (nor does Grafana): the
service graph and collector health dashboards read a stand-in that serves the connectors' and
the collector's series under their documented names (tests/dashboards/metric_contract.py),
growing while the shop has traffic and then holding still, as a collector's counters do once
the traffic stops.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from collector_series import CollectorSeries, serving
from conditions import wait_for
from grafana_model import (
    ALL,
    DASHBOARD_FILES,
    MACROS,
    first_value,
    interpolate,
    load,
    resolved,
    targets,
    variables,
)
from loopback import UNREACHABLE
from prometheus_server import instant, label_values, prometheus_binary, running_prometheus
from shop import Shop, start_shop

APP = Path(__file__).parent / "apps" / "dash_shop.py"
VERSIONS = ("1.0.0", "1.1.0")
PATHS = ("/orders/{i}", "/fail", "/checkout/cart-{i}", "/checkout/poison-{i}")
ROUNDS = 15
ROUND_SECONDS = 0.2  # traffic for 3 s: several scrapes of every series while it lasts
# Past the widest window a panel reads here ($__range), and a scrape more.
IDLE_SECONDS = float(MACROS["__range"].removesuffix("s")) + 3


def _opening(var: Mapping[str, Any], listed: list[str]) -> list[str]:
    """Grafana's "All" where a variable offers it, else the value Grafana opens on."""
    return [ALL] if var["includeAll"] else [first_value(var, listed)]


def _shown(url: str, name: str, since: float, at: float) -> dict[str, list[float]]:
    """Every query's values at ``at``, by panel title and query."""
    board = load(name)
    chosen = resolved(board, partial(_listed, url, since), _opening)
    return {
        f"{panel['id']} {panel['title']} {target['refId']}": [
            float(sample["value"][1])
            for sample in instant(url, interpolate(target["expr"], variables(board), chosen), at)
        ]
        for panel, target in targets(board)
    }


def _listed(url: str, since: float, selector: str, label: str) -> list[str]:
    return label_values(url, selector, label, since, time.time())


def _scraped(url: str, promql: str, expected: float) -> bool:
    return [float(sample["value"][1]) for sample in instant(url, promql)] == [expected]


def _send(shops: list[Shop]) -> None:
    with httpx.Client(timeout=10) as client:
        for i in range(ROUNDS):
            for shop in shops:
                for path in PATHS:
                    client.get(shop.url + path.format(i=i))
            time.sleep(ROUND_SECONDS)


def test_an_idle_service_shows_no_data_rather_than_nan(tmp_path: Path) -> None:
    collector = CollectorSeries()
    shops = [start_shop(APP, version) for version in VERSIONS]
    try:
        with (
            serving(collector) as collector_port,
            running_prometheus(
                prometheus_binary(),
                tmp_path,
                "shop",
                [
                    f"127.0.0.1:{port}"
                    for port in (*(s.metrics_port for s in shops), collector_port)
                ],
            ) as url,
        ):
            for shop in shops:  # while Prometheus waits for its first targets
                warm_up = partial(httpx.get, f"{shop.url}/orders/warm-up")
                wait_for(warm_up, 20, f"shop {shop.version} up", ignoring=UNREACHABLE)
            wait_for(lambda: len(instant(url, "up == 1")) == 3, 20, "first scrapes")
            since = time.time()
            _send(shops)
            collector.busy = False
            _wait_scraped(url, len(shops))
            busy = time.time()  # every request and message of the traffic scraped
            idle = busy + IDLE_SECONDS
            time.sleep(idle + 1 - time.time())
            for name in DASHBOARD_FILES:
                while_busy = _shown(url, name, since, busy)
                assert [query for query, values in while_busy.items() if not values] == [], name
                shown = _shown(url, name, since, idle)
                nan = [query for query, values in shown.items() if any(map(math.isnan, values))]
                assert nan == [], name
    finally:
        for shop in shops:
            shop.stop()


def _wait_scraped(url: str, shops: int) -> None:
    """Until Prometheus has every request (each checkout also calls /orders, and each shop had
    a warm-up request) and every message."""
    checkouts = shops * ROUNDS * 2
    for total, expected in (
        (
            "http_server_request_duration_seconds_count",
            shops * (ROUNDS * len(PATHS) + 1) + checkouts,
        ),
        ("messaging_process_duration_seconds_count", checkouts),
    ):
        scraped = partial(_scraped, url, f"sum({total})", expected)
        wait_for(scraped, 20, f"{total} scraped", ignoring=UNREACHABLE)
