"""The messaging dashboard's backlog panel ("Publish minus process rate") when a queue's
consumers have stopped and its publishers go on: the time that panel is for.

A publisher and a consumer of one destination run as two processes
(tests/dashboards/apps/worker.py), each scraped every second by a real Prometheus. Both handle
messages for a while; then the consumer's process exits (as a crashed or scaled-down consumer
does: Prometheus marks its series stale) while the publisher goes on.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import httpx
import pytest
from conditions import wait_for
from grafana_model import ALL, interpolate, load, panels, variables
from loopback import UNREACHABLE
from prometheus_server import instant, prometheus_binary, running_prometheus
from shop import Shop, start_shop

APP = Path(__file__).parent / "apps" / "worker.py"
RATE = 10.0  # messages per second
UP = 'sum(up{job="queue"})'


def _send(client: httpx.Client, shops: list[Shop], seconds: float) -> None:
    """One message a tick at each of ``shops``, ``RATE`` ticks a second."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for shop in shops:
            client.get(f"{shop.url}/message").raise_for_status()
        time.sleep(1 / RATE)


def _scraped(url: str, promql: str) -> float:
    found = instant(url, promql)
    return float(found[0]["value"][1]) if found else 0.0


def _shown(url: str, title: str, selected_range: str, at: float) -> dict[str, float]:
    """What the messaging dashboard's time-series panel ``title`` shows at ``at`` per
    destination, every variable on "All", over a time range of ``selected_range``."""
    board = load("messaging.json")
    panel = next(p for p in panels(board) if p["title"] == title and p["type"] == "timeseries")
    chosen = {"service": [ALL], "system": [ALL], "destination": [ALL]}
    expr = panel["targets"][0]["expr"].replace("$__range", selected_range)
    found = instant(url, interpolate(expr, variables(board), chosen), at)
    return {s["metric"]["messaging_destination_name"]: float(s["value"][1]) for s in found}


def _stat(url: str, title: str, at: float) -> list[float]:
    """What the messaging dashboard's stat panel ``title`` reads at ``at``, every variable on
    "All" (an empty list: Grafana's "No data")."""
    board = load("messaging.json")
    panel = next(p for p in panels(board) if p["title"] == title and p["type"] == "stat")
    chosen = {"service": [ALL], "system": [ALL], "destination": [ALL]}
    found = instant(url, interpolate(panel["targets"][0]["expr"], variables(board), chosen), at)
    return [float(s["value"][1]) for s in found]


def test_backlog_grows_at_the_publish_rate_while_no_consumer_runs(tmp_path: Path) -> None:
    """The panel subtracted the consumers' rate from the publishers': with no consumer series
    left, the subtraction matched nothing and the panel showed no data, while the queue grew by
    every message published."""
    publisher, consumer = (start_shop(APP, "1.0.0", role) for role in ("publisher", "consumer"))
    try:
        scrape = [f"127.0.0.1:{shop.metrics_port}" for shop in (publisher, consumer)]
        with (
            running_prometheus(prometheus_binary(), tmp_path, "queue", scrape) as url,
            httpx.Client(timeout=10) as client,
        ):
            for shop in (publisher, consumer):  # while Prometheus waits for its first targets
                shop.wait_up()
            wait_for(lambda: _scraped(url, UP) == 2, 20, "first scrapes", ignoring=UNREACHABLE)
            start = time.time()
            _send(client, [publisher, consumer], 3)
            consumer.stop()
            wait_for(lambda: _scraped(url, UP) == 1, 20, "the consumer's scrape failing")
            _send(client, [publisher], 7)  # longer than the rate interval: none consumed in it
            at = time.time()
            # both panels read the same samples: a scrape begun before ``at`` but stored between
            # the two queries made them differ by one sample (a loaded CI run: 9.61 against 9.76)
            wait_for(lambda: _scraped(url, 'max(timestamp(up{job="queue"} == 1))') > at, 20,
                     "the publisher's scrape after the last message")  # fmt: skip
            selected_range = f"{math.ceil(at - start) + 1}s"  # the consumer's run within it
            published = _shown(url, "Publish rate", selected_range, at)
            backlog = _shown(url, "Publish minus process rate", selected_range, at)
    finally:
        publisher.stop()
        consumer.stop()
    assert published["orders.created"] > 0
    assert backlog == {"orders.created": pytest.approx(published["orders.created"])}


def test_backlog_shows_no_line_while_prometheus_saw_nothing(tmp_path: Path) -> None:
    """Prometheus restarted mid-range: while it was down, the rate panels show a gap, and so
    must the backlog. Its stand-in 0 for a side that stopped (the test above) made both sides 0
    there: a flat line saying the queue neither grew nor shrank, where nothing was seen."""
    publisher, consumer = (start_shop(APP, "1.0.0", role) for role in ("publisher", "consumer"))
    scrape = [f"127.0.0.1:{shop.metrics_port}" for shop in (publisher, consumer)]
    try:
        with httpx.Client(timeout=10) as client:
            with running_prometheus(prometheus_binary(), tmp_path, "queue", scrape) as url:
                for shop in (publisher, consumer):  # while Prometheus waits for its targets
                    shop.wait_up()
                wait_for(lambda: _scraped(url, UP) == 2, 20, "first scrapes", ignoring=UNREACHABLE)
                start = time.time()
                _send(client, [publisher, consumer], 3)
                seen = time.time()
            _send(client, [publisher, consumer], 6.5)  # longer than the rate interval: unseen
            blind = time.time()
            _send(client, [publisher, consumer], 1)
            with running_prometheus(prometheus_binary(), tmp_path, "queue", scrape) as url:
                wait_for(lambda: _scraped(url, UP) == 2, 20, "scrapes again", ignoring=UNREACHABLE)
                selected_range = f"{math.ceil(blind - start) + 1}s"  # the first run within it
                published = _shown(url, "Publish rate", selected_range, blind)
                backlog = _shown(url, "Publish minus process rate", selected_range, blind)
                failed_seen = _stat(url, "Failed messages", seen)
                failed_unseen = _stat(url, "Failed messages", blind)
    finally:
        publisher.stop()
        consumer.stop()
    assert published == {}
    assert backlog == {}
    # The stat's stand-in 0 (vector(0)) read "0 failed", green, where nothing was seen either.
    assert failed_seen == [0.0]  # consumers handled messages and none failed
    assert failed_unseen == []
