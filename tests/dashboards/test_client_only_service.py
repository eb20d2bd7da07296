"""The service overview of a service that only calls out: a Celery worker, a batch job or a
consumer that calls HTTP APIs, with tracekit's client instrumentation and no HTTP server of its
own. The dashboard's "Outgoing HTTP calls" row is for its calls too.

One such service (tests/dashboards/apps/worker.py, role ``caller``) runs as a process of its
own, scraped every second by a real Prometheus.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from conditions import wait_for
from grafana_model import interpolate, load, panels, parse_label_values, variable_query, variables
from loopback import UNREACHABLE
from prometheus_server import instant, label_values, prometheus_binary, running_prometheus
from shop import start_shop

APP = Path(__file__).parent / "apps" / "worker.py"
CALLS = 20
CALLED = "sum(http_client_request_duration_seconds_count)"


def _scraped(url: str, promql: str) -> float:
    found = instant(url, promql)
    return float(found[0]["value"][1]) if found else 0.0


def test_a_service_that_only_calls_out_is_listed_and_its_calls_shown(tmp_path: Path) -> None:
    """The Service and Version variables listed the services with HTTP server metrics only: a
    service that only calls out was not among them, and its calls showed only under "All"."""
    caller = start_shop(APP, "2.0.0", "caller")
    try:
        scrape = [f"127.0.0.1:{caller.metrics_port}"]
        with (
            running_prometheus(prometheus_binary(), tmp_path, "jobs", scrape) as url,
            httpx.Client(base_url=caller.url, timeout=10) as client,
        ):
            caller.wait_up()  # while Prometheus waits for its first targets (see prometheus_server)
            wait_for(lambda: instant(url, "up == 1"), 20, "a first scrape", ignoring=UNREACHABLE)
            start = time.time()
            for _ in range(CALLS):
                client.get("/message").raise_for_status()
                time.sleep(0.1)
            wait_for(lambda: _scraped(url, CALLED) == CALLS, 20, "every call scraped")
            board = load("service-overview.json")
            definitions = variables(board)
            chosen: dict[str, list[str]] = {}
            for name in ("service", "version"):
                selector, label = parse_label_values(variable_query(definitions[name]))
                selector = interpolate(selector, definitions, chosen)
                chosen[name] = label_values(url, selector, label, start - 30, time.time())
            panel = next(p for p in panels(board) if p["title"] == "Outgoing request rate")
            promql = interpolate(panel["targets"][0]["expr"], definitions, chosen)
            shown = [s["metric"]["service_name"] for s in instant(url, promql)]
    finally:
        caller.stop()
    assert chosen == {"service": ["caller"], "version": ["2.0.0"]}
    assert shown == ["caller"]
