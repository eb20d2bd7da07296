"""The canary dashboard's Verdict row over the canary's window, as ``tracekit canary`` judges it.

Two versions of the shop (tests/dashboards/apps/dash_shop.py) run as subprocesses, scraped every
second by a real Prometheus. For the first seconds of the window the canary fails half of its
requests and answers the other half slowly; then both versions answer alike for longer than the
rate interval. The time range is set to that window, as the dashboard's tables ask.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
from conditions import wait_for
from grafana_model import interpolate, load, panels, variables
from loopback import UNREACHABLE
from prometheus_server import instant, prometheus_binary, running_prometheus
from shop import Shop, start_shop

APP = Path(__file__).parent / "apps" / "dash_shop.py"
BASELINE, CANARY = "1.0.0", "1.1.0"
SCRAPED = 'sum(http_server_request_duration_seconds_count{service_name="shop"})'


def _warm_up(shop: Shop) -> int:
    return httpx.get(f"{shop.url}/orders/warmup").status_code


@pytest.fixture
def shops() -> Iterator[dict[str, Shop]]:
    started = {version: start_shop(APP, version) for version in (BASELINE, CANARY)}
    try:
        for shop in started.values():
            wait_for(partial(_warm_up, shop), 20, "shop to answer", ignoring=UNREACHABLE)
        yield started
    finally:
        for shop in started.values():
            shop.stop()


def _verdict(url: str, title: str, selected_range: str, at: float) -> list[float]:
    """What the Verdict row's stat ``title`` reads at ``at`` (an empty list: "No data"), with
    a time range of ``selected_range`` ending there."""
    board = load("canary.json")
    panel = next(p for p in panels(board) if p["title"] == title and p["type"] == "stat")
    chosen = {"service": ["shop"], "baseline": [BASELINE], "canary": [CANARY]}
    expr = panel["targets"][0]["expr"].replace("$__range", selected_range)
    found = instant(url, interpolate(expr, variables(board), chosen), at)
    return [float(sample["value"][1]) for sample in found]


def _scraped(url: str) -> float:
    found = instant(url, SCRAPED)
    return float(found[0]["value"][1]) if found else 0.0


def test_the_verdict_judges_the_whole_window_not_its_last_seconds(
    tmp_path: Path, shops: dict[str, Shop]
) -> None:
    """The stats read a rate over $__rate_interval at the range's end: a canary that failed 10
    of its requests and answered 10 more in 0.3 s read as good as the baseline (error ratio
    difference 0) once its last minute was clean, while the table below and ``tracekit canary``
    over the same window found it worse."""
    scrape = [f"127.0.0.1:{shop.metrics_port}" for shop in shops.values()]
    baseline, canary = (httpx.Client(base_url=shops[v].url, timeout=10) for v in shops)
    # A failure before the window: its series exists when the window starts, and this test
    # is about the window's length alone (the next one: about series the window starts).
    assert canary.get("/fail").status_code == 500
    with running_prometheus(prometheus_binary(), tmp_path, "shop", scrape) as url:
        wait_for(lambda: _scraped(url) == 3, 20, "first scrapes", ignoring=UNREACHABLE)
        start = time.time()
        for i in range(10):  # the canary's bad start
            baseline.get(f"/orders/{i}").raise_for_status()
            assert canary.get("/fail").status_code == 500
            canary.get(f"/orders/slow-{i}").raise_for_status()
        alike = 0
        quiet_until = time.monotonic() + 7  # longer than the 5 s rate interval
        while time.monotonic() < quiet_until:  # then both answer alike
            for client in (baseline, canary):
                client.get(f"/orders/alike-{alike}").raise_for_status()
            alike += 1
            time.sleep(0.1)
        at = time.time()
        wait_for(lambda: _scraped(url) == 3 + 30 + 2 * alike, 20, "every request scraped")
        selected_range = f"{math.ceil(at - start) + 2}s"
        errors = _verdict(url, "Error ratio: canary minus baseline", selected_range, at)
        p95 = _verdict(url, "p95: canary \N{DIVISION SIGN} baseline", selected_range, at)
    baseline.close()
    canary.close()
    assert errors == [pytest.approx(10 / (20 + alike), abs=0.05)]
    # 10 of the canary's successes took 0.3 s, well past its 95th percentile's share.
    assert len(p95) == 1 and p95[0] > 5


def test_the_verdict_counts_the_failures_that_started_a_series(
    tmp_path: Path, shops: dict[str, Shop]
) -> None:
    """A canary's first failure of a kind (its first 500 on a route) starts a series, and
    rate() counts nothing for the step from no series to its first value: a canary that failed
    once on /fail and once on /crash within the window read an error ratio difference of 0
    (and every new pod's requests up to its first scrape went uncounted). ``tracekit canary``
    counts such series from zero (tracekit.canary.prometheus), and so does the Verdict row."""
    scrape = [f"127.0.0.1:{shop.metrics_port}" for shop in shops.values()]
    baseline, canary = (httpx.Client(base_url=shops[v].url, timeout=10) for v in shops)
    with running_prometheus(prometheus_binary(), tmp_path, "shop", scrape) as url:
        wait_for(lambda: _scraped(url) == 2, 20, "first scrapes", ignoring=UNREACHABLE)
        start = time.time()
        for i in range(20):
            baseline.get(f"/orders/{i}").raise_for_status()
            path = {5: "/fail", 15: "/crash"}.get(i, f"/orders/{i}")
            canary.get(path)
            time.sleep(0.1)
        wait_for(lambda: _scraped(url) == 2 + 40, 20, "every request scraped")
        at = time.time()
        selected_range = f"{math.ceil(at - start)}s"
        errors = _verdict(url, "Error ratio: canary minus baseline", selected_range, at)
    baseline.close()
    canary.close()
    # 2 of the canary's 20 failed, none of the baseline's; increase() extrapolates the series
    # that existed to the window's edges, up to a scrape interval each side of a window of a
    # few seconds.
    assert errors == [pytest.approx(2 / 20, abs=0.03)]
