"""docs/metrics.md's "Useful PromQL", as written, against a real Prometheus scraping a service.

The service (tests/dashboards/apps/dash_shop.py, named ``orders`` as the page's first query
expects) has answered every request and handled every message: where a reader first pastes these
queries. Each must answer a value there (an error ratio of 0), never an empty result, which
Grafana shows as "No data" and an alert rule as a missing series.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conditions import wait_for
from doc_blocks import ROOT, blocks
from loopback import UNREACHABLE
from prometheus_server import instant, prometheus_binary, running_prometheus
from shop import Shop, start_shop

APP = Path(__file__).parent / "apps" / "dash_shop.py"
REQUESTS = 20  # each an order and a checkout (an httpx call, a message published and consumed)


def documented_queries() -> list[str]:
    """The PromQL block's queries, each the lines under its comment."""
    (block,) = [b for b in blocks(ROOT / "docs" / "metrics.md") if b.language == "promql"]
    queries: list[list[str]] = []
    for line in block.text.splitlines():
        if line.startswith("#"):
            if not queries or queries[-1]:
                queries.append([])
        else:
            queries[-1].append(line.strip())
    return [" ".join(lines) for lines in queries]


@pytest.fixture(scope="module")
def healthy_shop() -> Iterator[Shop]:
    shop = start_shop(APP, "1.0.0", "orders")
    try:
        wait_for(
            lambda: httpx.get(f"{shop.url}/orders/warmup").status_code, 20, "the shop to answer",
            ignoring=UNREACHABLE,
        )  # fmt: skip
        yield shop
    finally:
        shop.stop()


def test_every_documented_query_answers_for_a_service_without_failures(
    healthy_shop: Shop, tmp_path: Path
) -> None:
    target = f"127.0.0.1:{healthy_shop.metrics_port}"
    with running_prometheus(prometheus_binary(), tmp_path, "orders", [target]) as url:
        wait_for(lambda: instant(url, "up == 1"), 20, "a first scrape", ignoring=UNREACHABLE)
        with httpx.Client(base_url=healthy_shop.url, timeout=20) as client:
            for i in range(REQUESTS):  # over a few scrapes: rate() needs two samples
                assert client.get(f"/checkout/cart-{i}").status_code == 200
                time.sleep(0.15)
        sent = 2 * REQUESTS + 1  # the checkouts, the orders they called, the warm-up
        wait_for(
            lambda: _scraped(url, "http_server_request_duration_seconds_count") == sent,
            30, "the requests scraped", ignoring=UNREACHABLE,
        )  # fmt: skip
        wait_for(
            lambda: _scraped(url, "tracekit_messaging_queue_wait_seconds_count") == REQUESTS,
            30, "the messages scraped", ignoring=UNREACHABLE,
        )  # fmt: skip
        assert _scraped(url, 'http_server_request_duration_seconds_count{error_type!=""}') == 0

        queries = documented_queries()
        assert len(queries) == 4
        empty = [query for query in queries if not instant(url, query)]
        assert not empty, empty


def _scraped(url: str, series: str) -> float:
    found = instant(url, f"sum({series})")
    return float(found[0]["value"][1]) if found else 0.0
