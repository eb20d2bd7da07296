"""Every tracekit dashboard on a service name and a version a PromQL string must escape.

``OTEL_SERVICE_NAME`` and ``TRACEKIT_SERVICE_VERSION`` are free text: a double quote, a backslash
or a regex character in them is the user's right. Grafana's Prometheus data source escapes a
variable's value for a regex (multi-value or "All") or not at all (single value), and in both
cases leaves a double quote as it is (tests/dashboards/grafana_model.py):
``service_name=~"$service"`` then ends the string early, and the panel shows a parse error
instead of the service. Two versions of tests/dashboards/apps/dash_shop.py run here under such a
name; every panel must show them, with one value per variable and with several.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from conditions import wait_for
from grafana_model import (
    ALL,
    COLLECTOR_DASHBOARDS,
    DASHBOARD_FILES,
    interpolate,
    load,
    parse_label_values,
    targets,
    variable_query,
    variables,
)
from loopback import UNREACHABLE
from prometheus_server import instant, label_values, prometheus_binary, running_prometheus
from shop import Shop, start_shop

APP = Path(__file__).parent / "apps" / "dash_shop.py"
PATHS = ("/orders/{i}", "/orders/slow-{i}", "/fail", "/crash", "/checkout/cart-{i}",
         "/checkout/poison-{i}")  # fmt: skip
SERVICE = "shop \"eu\" \\ 'x' (a|b) {c} $d ^e* f+g? h.i [j]/k"
BASELINE, CANARY = "1.0.0", "1.1.0 \"rc\" \\ 'y' (a|b) {c} $d ^e* f+g? h.i [j]/k"
# The value each variable is set to where it names the service or a version.
WANTED = {"service": SERVICE, "version": CANARY, "baseline": BASELINE, "canary": CANARY}
TRACEKIT_DASHBOARDS = [name for name in DASHBOARD_FILES if name not in COLLECTOR_DASHBOARDS]


def _answers(url: str) -> bool:
    return httpx.get(f"{url}/orders/warmup").status_code == 200  # this app has no /health


def _scraped(url: str, promql: str) -> float:
    found = instant(url, promql)
    return float(found[0]["value"][1]) if found else 0.0


@dataclass
class Run:
    prometheus: str
    end: float  # just after the traffic was scraped: a rate over the last seconds sees it


def _round(client: httpx.Client, shops: list[Shop], i: int) -> None:
    # each path on one version and then the other: a 5 s rate window that starts or ends inside
    # the traffic (a loaded machine takes longer than that to send it) still sees as many
    # requests of each version, give or take one
    for path in PATHS:
        for shop in shops:
            client.get(shop.url + path.format(i=i))


def _wait_for_messages(url: str, rounds: int) -> None:
    checkouts = 2 * 2 * rounds  # two kinds of checkout a round, on each version
    wait_for(
        lambda: _scraped(url, "sum(messaging_process_duration_seconds_count)") == checkouts,
        30,
        "every message scraped",
        ignoring=UNREACHABLE,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    binary = prometheus_binary()
    shops = [start_shop(APP, version, SERVICE) for version in (BASELINE, CANARY)]
    try:
        scrape = [f"127.0.0.1:{shop.metrics_port}" for shop in shops]
        directory = tmp_path_factory.mktemp("awkward-names")
        with running_prometheus(binary, directory, "shop", scrape) as url:
            for shop in shops:  # while Prometheus waits for its first targets
                wait_for(partial(_answers, shop.url), 20, "shop up", ignoring=UNREACHABLE)
            up = 'sum(up{job="shop"})'
            wait_for(lambda: _scraped(url, up) == 2, 20, "first scrapes", ignoring=UNREACHABLE)
            with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as c:
                # a first round gives every series a value before the measured ones: rate() sees
                # no growth in a series born with its last value (messages handled in one burst)
                _round(c, shops, 0)
                _wait_for_messages(url, 1)
                time.sleep(1.5)  # a scrape of those first values
                for i in range(1, 4):
                    _round(c, shops, i)
            _wait_for_messages(url, 4)
            end = time.time() + 1.5  # the scrape after the last message
            time.sleep(1.5)
            yield Run(url, end)
    finally:
        for shop in shops:
            shop.stop()


def _chosen(url: str, board: dict[str, Any], several: bool) -> dict[str, list[str]]:
    """Each variable set as a user would: to the awkward service and version where it lists
    them, else to its first value; ``several``: a multi-value one to every value it lists."""
    definitions = variables(board)
    chosen: dict[str, list[str]] = {}
    for name, var in list(definitions.items())[1:]:
        selector, label = parse_label_values(variable_query(var))
        listed = label_values(url, interpolate(selector, definitions, chosen), label, 0, 2**31)
        if several and var["multi"]:
            chosen[name] = listed
        else:
            chosen[name] = [WANTED.get(name, listed[0])]
        assert set(chosen[name]) <= set(listed), (name, listed)
    return chosen


@pytest.mark.parametrize("several", [False, True], ids=["one-value", "several-values"])
@pytest.mark.parametrize("name", TRACEKIT_DASHBOARDS)
def test_every_panel_shows_a_service_named_with_quotes(run: Run, name: str, several: bool) -> None:
    board = load(name)
    chosen = _chosen(run.prometheus, board, several)
    assert SERVICE in chosen["service"]
    empty = []
    for panel, target in targets(board):
        promql = interpolate(target["expr"], variables(board), chosen)
        values = [float(sample["value"][1]) for sample in instant(run.prometheus, promql, run.end)]
        if not any(math.isfinite(value) for value in values):
            empty.append(f"{panel['title']!r} {target['refId']}: {values} from {promql}")
    assert empty == []


def test_the_canary_share_counts_the_canary_requests(run: Run) -> None:
    """Each version served the same requests: the canary's share is a half, found through the
    canary's awkward version (its matcher selects that version exactly, regex characters and
    all)."""
    board = load("canary.json")
    panel = next(p for p, _ in targets(board) if p["title"] == "Canary request share")
    chosen = _chosen(run.prometheus, board, several=False)
    promql = interpolate(panel["targets"][0]["expr"], variables(board), chosen)
    found = instant(run.prometheus, promql, run.end)
    assert [float(sample["value"][1]) for sample in found] == [pytest.approx(0.5, abs=0.1)]


def _listed(url: str, board: dict[str, Any], chosen: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each variable after those ``chosen``, set to every value its query lists there."""
    definitions = variables(board)
    for name, var in list(definitions.items())[1:]:
        if name not in chosen:
            selector, label = parse_label_values(variable_query(var))
            selector = interpolate(selector, definitions, chosen)
            chosen[name] = sorted(label_values(url, selector, label, 0, 2**31))
    return chosen


@pytest.mark.parametrize("service", [SERVICE, ALL], ids=["awkward-name", "all"])
def test_the_messaging_lists_follow_a_service_named_with_quotes(run: Run, service: str) -> None:
    """System and Destination list the chosen service's own queues (their queries are scoped by
    it), whatever quotes and regex characters its name holds, and every queue under "All"."""
    listed = _listed(run.prometheus, load("messaging.json"), {"service": [service]})
    assert listed == {"service": [service], "system": ["inproc"], "destination": ["orders.created"]}


@pytest.mark.parametrize("service", [SERVICE, ALL], ids=["awkward-name", "all"])
def test_the_service_overview_lists_follow_a_service_named_with_quotes(
    run: Run, service: str
) -> None:
    """The Service list (servers and clients alike) names the service, and Version lists both
    of its versions when it or "All" is chosen."""
    board = load("service-overview.json")
    assert SERVICE in _listed(run.prometheus, board, {})["service"]
    listed = _listed(run.prometheus, board, {"service": [service]})
    assert listed == {"service": [service], "version": sorted([BASELINE, CANARY])}
