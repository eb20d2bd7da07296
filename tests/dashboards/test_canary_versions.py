"""The canary dashboard on versions that a PromQL string must escape, against a real Prometheus.

A version is free text (``TRACEKIT_SERVICE_VERSION``): a build tag can hold a double quote, a
backslash or a single quote. Grafana's Prometheus data source inserts a variable that is neither
multi-value nor "All" with only backslashes and single quotes escaped (tests/dashboards/
grafana_model.py), so a matcher ``service_version="$canary"`` broke on a double quote and matched
nothing on a single quote. Two versions of tests/dashboards/apps/dash_shop.py run here, one with
such a name; every panel of the canary dashboard must show both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
from conditions import wait_for
from grafana_model import interpolate, load, parse_label_values, targets, variable_query, variables
from loopback import UNREACHABLE
from prometheus_server import instant, label_values, prometheus_binary, running_prometheus
from shop import start_shop

APP = Path(__file__).parent / "apps" / "dash_shop.py"
BASELINE, CANARY = "1.0.0", "1.1.0 \"rc\" \\ 'x' (a|b) {c} $d ^e* f+g? h.i [j]/k"
PATHS = ("/orders/{i}", "/orders/slow-{i}", "/fail", "/crash", "/checkout/cart-{i}",
         "/checkout/poison-{i}")  # fmt: skip
ROUNDS = 6


def _answers(url: str) -> bool:
    return httpx.get(f"{url}/orders/warmup").status_code == 200  # this app has no /health


def _scraped(url: str, promql: str) -> float:
    found = instant(url, promql)
    return float(found[0]["value"][1]) if found else 0.0


@dataclass
class Run:
    prometheus: str
    end: float  # the traffic's end: a rate over the last seconds still sees it


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    binary = prometheus_binary()
    shops = [start_shop(APP, version) for version in (BASELINE, CANARY)]
    try:
        for shop in shops:
            wait_for(partial(_answers, shop.url), 20, "shop up", ignoring=UNREACHABLE)
        scrape = [f"127.0.0.1:{shop.metrics_port}" for shop in shops]
        directory = tmp_path_factory.mktemp("canary-versions")
        with running_prometheus(binary, directory, "shop", scrape) as url:
            up = 'sum(up{job="shop"})'
            wait_for(lambda: _scraped(url, up) == 2, 20, "first scrapes", ignoring=UNREACHABLE)
            with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as c:
                for i in range(ROUNDS):  # over about 4 s: /orders/slow-i takes 0.3 s
                    for shop in shops:
                        for path in PATHS:
                            c.get(shop.url + path.format(i=i))
            end = time.time()
            checkouts = 2 * ROUNDS * 2  # two kinds of checkout a round, on each version
            wait_for(
                lambda: _scraped(url, "sum(messaging_process_duration_seconds_count)") == checkouts,
                30,
                "every message scraped",
                ignoring=UNREACHABLE,
            )
            time.sleep(max(0.0, end + 1.5 - time.time()))  # the scrape after the end
            yield Run(url, end)
    finally:
        for shop in shops:
            shop.stop()


def _chosen(url: str) -> dict[str, list[str]]:
    """The service, and the baseline and canary picked from what Grafana lists for them."""
    board = load("canary.json")
    definitions = variables(board)
    chosen: dict[str, list[str]] = {}
    for name, wanted in (("service", "shop"), ("baseline", BASELINE), ("canary", CANARY)):
        selector, label = parse_label_values(variable_query(definitions[name]))
        listed = label_values(url, interpolate(selector, definitions, chosen), label, 0, 2**31)
        assert wanted in listed, (name, listed)
        chosen[name] = [wanted]
    return chosen


def test_every_canary_panel_shows_a_version_with_quotes_and_backslashes(run: Run) -> None:
    board = load("canary.json")
    chosen = _chosen(run.prometheus)
    empty = []
    for panel, target in targets(board):
        promql = interpolate(target["expr"], variables(board), chosen)
        values = [float(sample["value"][1]) for sample in instant(run.prometheus, promql, run.end)]
        if not any(math.isfinite(value) for value in values):
            empty.append(f"{panel['title']!r} {target['refId']}: {values} from {promql}")
    assert empty == []


def test_the_canary_share_counts_the_canary_requests(run: Run) -> None:
    """Each version served the same requests: the canary's share is a half."""
    board = load("canary.json")
    panel = next(p for p, _ in targets(board) if p["title"] == "Canary request share")
    promql = interpolate(panel["targets"][0]["expr"], variables(board), _chosen(run.prometheus))
    found = instant(run.prometheus, promql, run.end)
    assert [float(sample["value"][1]) for sample in found] == [pytest.approx(0.5, abs=0.1)]
