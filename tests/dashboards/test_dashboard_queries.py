"""Every dashboard query, variables substituted, against a real Prometheus scraping real services.

Two versions of an instrumented service (tests/dashboards/apps/dash_shop.py: tracekit.init(),
Starlette under uvicorn, httpx calls, tracekit.messaging publish/consume over an in-process
queue) run as subprocesses; the Debian ``prometheus`` binary scrapes both every second. After
steady traffic, each dashboard's variables are resolved the way Grafana does (its
``label_values`` query through Prometheus' label API, chained in order) and every panel query is
run with those values: once with "All" selected, once with one concrete value per variable.

The service graph and collector health dashboards read metrics that only an OpenTelemetry
Collector produces; no collector binary runs here. Their queries are still sent to this
Prometheus, which proves they parse and evaluate; their names are checked against the
components' documentation in test_dashboard_model.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
    MACROS,
    first_value,
    interpolate,
    load,
    panels,
    parse_label_values,
    targets,
    variable_query,
    variables,
)
from loopback import UNREACHABLE
from prometheus_server import (
    api,
    instant,
    label_values,
    prometheus_binary,
    running_prometheus,
)
from shop import Shop, start_shop

APP = Path(__file__).parent / "apps" / "dash_shop.py"
BASELINE, CANARY = "1.0.0", "1.1.0"
RATE = 40.0  # requests per second over both versions
DURATION = 6.0  # seconds of steady traffic
# Seven request kinds; 7 and the 10-request version cycle are coprime, so both versions get all.
KINDS = (
    "/orders/slow-{i}",
    "/orders/{i}",
    "/crash",
    "/fail",
    "/checkout/cart-{i}",
    "/checkout/cart-{i}",
    "/checkout/poison-{i}",
)
TRACEKIT_DASHBOARDS = [name for name in DASHBOARD_FILES if name not in COLLECTOR_DASHBOARDS]


def _warm_up(shop: Shop) -> int:
    return httpx.get(f"{shop.url}/orders/warmup").status_code


@pytest.fixture(scope="module")
def shops() -> Iterator[dict[str, Shop]]:
    """Both versions, started: ``prometheus`` waits for their warm-up requests."""
    started = {version: start_shop(APP, version) for version in (BASELINE, CANARY)}
    try:
        yield started
    finally:
        for shop in started.values():
            shop.stop()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, shops: dict[str, Shop]) -> Iterator[str]:
    binary = prometheus_binary()
    scrape = [f"127.0.0.1:{shop.metrics_port}" for shop in shops.values()]
    directory = tmp_path_factory.mktemp("dash-prometheus")
    with running_prometheus(binary, directory, "shop", scrape) as url:
        for shop in shops.values():  # while Prometheus waits for its first targets
            wait_for(
                partial(_warm_up, shop), 20, f"shop {shop.version} to answer", ignoring=UNREACHABLE
            )
        wait_for(
            lambda: len(instant(url, 'up{job="shop"} == 1')) == 2,
            20,
            "first scrapes",
            ignoring=UNREACHABLE,
        )
        yield url


@dataclass
class Traffic:
    sent: list[tuple[str, str]]  # (version, path)
    start: float
    end: float

    def count(self, version: str | None = None, prefix: str = "/") -> int:
        return sum(1 for v, path in self.sent if (version in (None, v)) and path.startswith(prefix))


def _send(clients: dict[str, httpx.Client], plan: list[tuple[str, str]]) -> list[int]:
    start = time.time()
    with ThreadPoolExecutor(16) as pool:
        futures = []
        for i, (version, path) in enumerate(plan):
            time.sleep(max(0.0, start + i / RATE - time.time()))
            futures.append(pool.submit(clients[version].get, path))
        statuses = [future.result().status_code for future in futures]
    print(f"sent {len(plan)} requests in {time.time() - start:.1f} s")
    return statuses


@pytest.fixture(scope="module")
def traffic(shops: dict[str, Shop], prometheus: str) -> Traffic:
    plan = [
        (CANARY if i % 10 < 3 else BASELINE, KINDS[i % len(KINDS)].format(i=i))
        for i in range(int(RATE * DURATION))
    ]
    # A connection per request: uvicorn closes the connection of a request whose app raised
    # after answering (/crash), and a pooled client could send the next request on it first
    # (connection reset; seen once in a loaded CI run).
    fresh = httpx.Limits(max_keepalive_connections=0)
    clients = {
        v: httpx.Client(base_url=shop.url, timeout=10, limits=fresh) for v, shop in shops.items()
    }
    start = time.time()
    try:
        statuses = _send(clients, plan)
    finally:
        for client in clients.values():
            client.close()
    end = time.time()
    assert [s == 500 for s in statuses] == [path in ("/fail", "/crash") for _, path in plan]
    result = Traffic(plan, start, end)
    checkouts = result.count(prefix="/checkout/")
    # Every request, the order call each checkout makes, and one warm-up request per version.
    expected = len(plan) + checkouts + len(shops)
    total = "sum(http_server_request_duration_seconds_count)"
    consumed = "sum(messaging_client_consumed_messages_total)"
    wait_for(
        lambda: _value(prometheus, total) == expected,
        20,
        "every request scraped",
        ignoring=UNREACHABLE,
    )
    wait_for(
        lambda: _value(prometheus, consumed) == checkouts,
        20,
        "every message scraped",
        ignoring=UNREACHABLE,
    )
    return result


def _value(url: str, promql: str, at: float | None = None) -> float | None:
    result = instant(url, promql, at)
    return float(result[0]["value"][1]) if result else None


def _values(url: str, promql: str, at: float) -> list[float]:
    return [float(series["value"][1]) for series in instant(url, promql, at)]


def _resolve(
    url: str, board: dict[str, Any], traffic: Traffic, pick_all: bool
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(chosen values, listed values) per variable, resolved in dashboard order."""
    definitions = variables(board)
    chosen: dict[str, list[str]] = {}
    listed: dict[str, list[str]] = {}
    for name, var in list(definitions.items())[1:]:
        selector, label = parse_label_values(variable_query(var))
        selector = interpolate(selector, definitions, chosen)
        listed[name] = label_values(url, selector, label, traffic.start - 30, traffic.end + 5)
        assert listed[name], f"variable {name}: label_values({selector}, {label}) is empty"
        if pick_all and (var["multi"] or var["includeAll"]):
            chosen[name] = [ALL]
        else:
            chosen[name] = [first_value(var, listed[name])]  # Grafana's default
    return chosen, listed


def _panel_failures(
    url: str, board: dict[str, Any], chosen: dict[str, list[str]], at: float
) -> list[str]:
    definitions = variables(board)
    failures = []
    for panel, target in targets(board):
        promql = interpolate(target["expr"], definitions, chosen)
        result = instant(url, promql, at)
        values = [float(sample["value"][1]) for sample in result]
        if not any(math.isfinite(v) for v in values):
            failures.append(f"{panel['title']!r} {target['refId']}: {values} from {promql}")
    return failures


@pytest.mark.parametrize("pick_all", [True, False], ids=["all", "one-value"])
@pytest.mark.parametrize("name", TRACEKIT_DASHBOARDS)
def test_every_panel_query_returns_data(
    prometheus: str, traffic: Traffic, name: str, pick_all: bool
) -> None:
    board = load(name)
    chosen, _ = _resolve(prometheus, board, traffic, pick_all)
    assert _panel_failures(prometheus, board, chosen, traffic.end) == []


def test_variables_list_what_the_services_emit(prometheus: str, traffic: Traffic) -> None:
    _, endpoint = _resolve(prometheus, load("endpoint.json"), traffic, pick_all=True)
    assert endpoint["service"] == ["shop"]
    assert endpoint["version"] == [BASELINE, CANARY]
    assert endpoint["route"] == ["/checkout/{cart_id}", "/crash", "/fail", "/orders/{order_id}"]
    assert endpoint["method"] == ["GET"]
    _, canary = _resolve(prometheus, load("canary.json"), traffic, pick_all=False)
    assert canary["baseline"] == canary["canary"] == [BASELINE, CANARY]
    _, queues = _resolve(prometheus, load("messaging.json"), traffic, pick_all=True)
    assert (queues["service"], queues["system"], queues["destination"]) == (
        ["shop"],
        ["inproc"],
        ["orders.created"],
    )


def _panel_value(url: str, name: str, title: str, chosen: dict[str, list[str]], at: float) -> float:
    board = load(name)
    panel = next(p for p in panels(board) if p["title"] == title and p["type"] == "stat")
    promql = interpolate(panel["targets"][0]["expr"], variables(board), chosen)
    value = _value(url, promql, at)
    assert value is not None, promql
    return value


def test_canary_stats_match_the_traffic_sent(prometheus: str, traffic: Traffic) -> None:
    chosen = {"service": ["shop"], "baseline": [BASELINE], "canary": [CANARY]}
    share = _panel_value(prometheus, "canary.json", "Canary request share", chosen, traffic.end)
    direct = traffic.count(CANARY) / len(traffic.sent)
    assert share == pytest.approx(direct, abs=0.08)
    # Both versions fail /fail alike: the error ratio difference is near zero.
    title = "Error ratio: canary minus baseline"
    delta = _panel_value(prometheus, "canary.json", title, chosen, traffic.end)
    assert abs(delta) < 0.1


def test_canary_consumer_stats_match_the_messages_handled(
    prometheus: str, traffic: Traffic
) -> None:
    """The Verdict row judges a service's queue consumers too: each checkout publishes one
    message its own version consumes, a poison one (a checkout kind in three) fails in both."""
    chosen = {"service": ["shop"], "baseline": [BASELINE], "canary": [CANARY]}
    share = _panel_value(prometheus, "canary.json", "Canary message share", chosen, traffic.end)
    checkouts = traffic.count(prefix="/checkout/")
    assert share == pytest.approx(traffic.count(CANARY, "/checkout/") / checkouts, abs=0.08)
    title = "Failed-message ratio: canary minus baseline"
    delta = _panel_value(prometheus, "canary.json", title, chosen, traffic.end)
    assert abs(delta) < 0.15
    for quantile in ("p95", "p99"):  # both versions' handlers return at once
        title = f"Handler {quantile}: canary \N{DIVISION SIGN} baseline"
        ratio = _panel_value(prometheus, "canary.json", title, chosen, traffic.end)
        assert 0.5 < ratio < 2.0


@pytest.mark.parametrize(
    ("name", "chosen"),
    [
        ("service-overview.json", {"service": ["shop"], "version": [ALL]}),
        ("endpoint.json", {"service": ["shop"], "version": [ALL], "route": [ALL], "method": [ALL]}),
    ],
)
def test_error_ratio_counts_every_500_the_clients_got(
    prometheus: str, traffic: Traffic, name: str, chosen: dict[str, list[str]]
) -> None:
    """/fail answers 500; /crash raises, and the app's exception handler, run by Starlette's
    ServerErrorMiddleware outside the app's middleware, answers 500: clients got both, the
    ratio counts both."""
    board = load(name)
    panel = next(p for p in panels(board) if p["title"].startswith("Error ratio"))
    promql = interpolate(panel["targets"][0]["expr"], variables(board), chosen)
    ratios = [v for v in _values(prometheus, promql, traffic.end) if v > 0]
    failed = traffic.count(prefix="/fail") + traffic.count(prefix="/crash")
    served = len(traffic.sent) + traffic.count(prefix="/checkout")  # each checkout calls /orders
    if name == "service-overview.json":
        assert ratios == [pytest.approx(failed / served, abs=0.05)]
    else:  # per route: the two failing routes fail every time
        assert sorted(ratios) == [pytest.approx(1.0, abs=0.01)] * 2


def test_messaging_stats_match_the_traffic_sent(prometheus: str, traffic: Traffic) -> None:
    chosen = {"service": [ALL], "system": [ALL], "destination": [ALL]}
    published = _panel_value(prometheus, "messaging.json", "Publish rate", chosen, traffic.end)
    failed = _panel_value(prometheus, "messaging.json", "Failed messages", chosen, traffic.end)
    assert published > 0
    assert failed / published == pytest.approx(1 / 3, abs=0.12)  # one checkout kind in three
    wait = _panel_value(prometheus, "messaging.json", "Queue wait p95", chosen, traffic.end)
    assert 0.01 <= wait <= 1.0  # the consumer sleeps 20 ms per message


def _exemplars(
    url: str, promql: str, traffic: Traffic
) -> list[tuple[dict[str, str], dict[str, Any]]]:
    data = api(url, "query_exemplars", query=promql, start=traffic.start - 5, end=time.time() + 1)
    return [(series["seriesLabels"], e) for series in data for e in series["exemplars"]]


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("endpoint.json", "Latency per route (exemplars link to traces)"),
        ("endpoint.json", "Latency distribution (exemplars link to traces)"),
        ("messaging.json", "Queue wait p50 / p95 (exemplars link to traces)"),
        ("canary.json", "Latency p95"),
    ],
)
def test_exemplar_panels_get_trace_ids_from_prometheus(
    prometheus: str, traffic: Traffic, name: str, title: str
) -> None:
    board = load(name)
    chosen, _ = _resolve(prometheus, board, traffic, pick_all=True)
    panel = next(p for p in panels(board) if p["title"] == title)
    target = next(t for t in panel["targets"] if t["exemplar"])
    found = _exemplars(prometheus, interpolate(target["expr"], variables(board), chosen), traffic)
    assert len(found) >= 3
    for _, exemplar in found:
        trace_id = exemplar["labels"]["trace_id"]
        assert len(trace_id) == 32 and int(trace_id, 16) != 0


# What one heatmap cell of a unit holds, in requests, at the step Grafana's $__interval gives.
_REQUESTS_PER_CELL_UNIT = {"short": 1.0, "reqps": float(MACROS["__interval"].removesuffix("s"))}


def _heatmap_cells(url: str, promql: str, start: float, end: float) -> list[float]:
    """Every cell of a heatmap panel's range query, as Grafana draws it: a column per step, and
    in each the cumulative ``le`` series turned into one bucket each ("Format as: Heatmap")."""
    step = float(MACROS["__interval"].removesuffix("s"))
    start, end = step * math.floor(start / step), step * math.ceil(end / step)
    data = api(url, "query_range", query=promql, start=start, end=end, step=step)
    columns: dict[float, list[tuple[float, float]]] = {}
    for series in data["result"]:
        bound = float(series["metric"]["le"])
        for at, value in series["values"]:
            columns.setdefault(at, []).append((bound, float(value)))
    cells = []
    for column in columns.values():
        below = 0.0
        for _, cumulative in sorted(column):
            cells.append(cumulative - below)
            below = cumulative
    return cells


def test_latency_heatmap_counts_each_request_once(
    prometheus: str, shops: dict[str, Shop], traffic: Traffic
) -> None:
    """A burst of 20 requests after a quiet spell: the heatmap's cells over that time, read in
    the unit the panel gives them, hold the 20 requests once. A count per cell of increase()
    over $__rate_interval, a window wider than a cell, counted each request in every cell whose
    window held it: 80 to 100 here."""
    board = load("endpoint.json")
    panel = next(p for p in panels(board) if p["type"] == "heatmap")
    chosen = {"service": ["shop"], "version": [BASELINE], "route": [ALL], "method": [ALL]}
    promql = interpolate(panel["targets"][0]["expr"], variables(board), chosen)
    # Every request of the traffic is scraped: a window starting from now on holds none of them.
    quiet_since = time.time()
    total = f'sum(http_server_request_duration_seconds_count{{service_version="{BASELINE}"}})'
    before = _value(prometheus, total)
    assert before is not None
    time.sleep(max(0.0, quiet_since + 5.5 - time.time()))
    start = time.time()
    sent = 20
    with httpx.Client(base_url=shops[BASELINE].url, timeout=10) as client:
        assert all(client.get(f"/orders/burst-{i}").status_code == 200 for i in range(sent))
    wait_for(lambda: _value(prometheus, total) == before + sent, 20, "the burst scraped")
    end = time.time() + 6  # the last window that holds a request of the burst
    time.sleep(max(0.0, end + 1 - time.time()))  # a window ending in the future would be partial

    cells = _heatmap_cells(prometheus, promql, start, end)
    unit = panel["options"]["cellValues"]["unit"]
    # Exact at steady 1 s scrapes; a late or missed scrape under load moves the extrapolation.
    assert sum(cells) * _REQUESTS_PER_CELL_UNIT[unit] == pytest.approx(sent, rel=0.1)


@pytest.mark.parametrize("name", COLLECTOR_DASHBOARDS)
def test_collector_dashboard_queries_are_valid_promql(prometheus: str, name: str) -> None:
    """No collector runs here: Prometheus must accept every query (status success), data or not."""
    board = load(name)
    definitions = variables(board)
    chosen = {var: [ALL] for var in definitions}
    for _, target in targets(board):
        instant(prometheus, interpolate(target["expr"], definitions, chosen))
    for var in list(definitions.values())[1:]:
        selector, label = parse_label_values(variable_query(var))
        api(
            prometheus,
            f"label/{label}/values",
            **{"match[]": interpolate(selector, definitions, chosen)},
        )


def test_the_routes_table_lists_every_route_of_the_selected_range(
    prometheus: str, traffic: Traffic
) -> None:
    """A table is one instant query at the range's end: over $__rate_interval it saw only the
    last seconds, and a route quiet since then (every route here, 8 s after the traffic) showed
    0 requests/s and no error ratio or latency, though it served requests in the range."""
    board = load("endpoint.json")
    panel = next(p for p in panels(board) if p["title"] == "Routes at a glance")
    chosen = {"service": ["shop"], "version": [ALL], "route": [ALL], "method": [ALL]}
    at = traffic.end + 8  # every route quiet for longer than the rate interval
    time.sleep(max(0.0, at + 1.5 - time.time()))
    selected_range = f"{math.ceil(at - traffic.start) + 1}s"
    sent = {"/orders/{order_id}", "/fail", "/crash", "/checkout/{cart_id}"}
    for target in panel["targets"]:
        expr = target["expr"].replace("$__range", selected_range)
        found = instant(prometheus, interpolate(expr, variables(board), chosen), at)
        shown = {s["metric"]["http_route"]: float(s["value"][1]) for s in found}
        routes = {route for route, value in shown.items() if math.isfinite(value)}
        assert routes == sent, (target["refId"], shown)
        if target["refId"] == "A":  # requests per second
            assert all(value > 0 for value in shown.values()), shown
