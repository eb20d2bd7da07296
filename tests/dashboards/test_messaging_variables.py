"""The messaging dashboard's variables with several services, each on queues of its own: the
System and Destination lists follow the Service chosen, as the panels do.

Two services (tests/dashboards/apps/worker.py) run as processes of their own, scraped every
second by a real Prometheus: ``publisher`` sends to ``orders.created``, ``consumer`` handles
messages of ``invoices.due``.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from conditions import wait_for
from grafana_model import interpolate, load, parse_label_values, variable_query, variables
from loopback import UNREACHABLE
from prometheus_server import instant, label_values, prometheus_binary, running_prometheus
from shop import start_shop

APP = Path(__file__).parent / "apps" / "worker.py"
ENDS = {"publisher": "orders.created", "consumer": "invoices.due"}
UP = "sum(up)"
HANDLED = (
    "sum(messaging_client_sent_messages_total) + sum(messaging_client_consumed_messages_total)"
)


def _scraped(url: str, promql: str) -> float:
    found = instant(url, promql)
    return float(found[0]["value"][1]) if found else 0.0


def test_destinations_listed_are_those_of_the_service_chosen(tmp_path: Path) -> None:
    """The System and Destination lists ignored the Service chosen: every service's queues were
    offered, and one of another service's showed empty panels."""
    workers = [start_shop(APP, "1.0.0", role, queue) for role, queue in ENDS.items()]
    try:
        scrape = [f"127.0.0.1:{worker.metrics_port}" for worker in workers]
        with (
            running_prometheus(prometheus_binary(), tmp_path, "queues", scrape) as url,
            httpx.Client(timeout=10) as client,
        ):
            for worker in workers:  # while Prometheus waits for its first targets
                worker.wait_up()
            wait_for(lambda: _scraped(url, UP) == 2, 20, "first scrapes", ignoring=UNREACHABLE)
            start = time.time()
            for worker in workers:
                client.get(f"{worker.url}/message").raise_for_status()
            wait_for(lambda: _scraped(url, HANDLED) == 2, 20, "both messages scraped")
            board = load("messaging.json")
            definitions = variables(board)
            listed: dict[str, list[str]] = {}
            for service in ENDS:
                chosen = {"service": [service]}
                for name in ("system", "destination"):
                    selector, label = parse_label_values(variable_query(definitions[name]))
                    selector = interpolate(selector, definitions, chosen)
                    chosen[name] = label_values(url, selector, label, start - 30, time.time())
                listed[service] = chosen["destination"]
    finally:
        for worker in workers:
            worker.stop()
    assert listed == {service: [queue] for service, queue in ENDS.items()}
