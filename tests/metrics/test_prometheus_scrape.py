"""A real Prometheus scrapes a running instrumented service: RED PromQL and trace exemplars.

The Debian ``prometheus`` binary (installed by .ci/run) is started with a temporary config, a 1 s
scrape interval and ``--enable-feature=exemplar-storage`` on a free loopback port. The service
(tests/metrics/apps/prom_service.py) runs under uvicorn in a subprocess with tracekit's middleware,
its metrics port, and span export into the embedded store, so exemplars can be matched to spans.
Outside CI a missing binary skips; with CI=true it fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conditions import wait_for
from loopback import UNREACHABLE, free_port, interrupt
from prometheus_server import prometheus_binary as find_prometheus
from prometheus_server import running_prometheus

from tracekit.store import Store

APP = Path(__file__).parent / "apps" / "prom_service.py"
RATE = 40.0  # requests per second of steady traffic
DURATION = 6.0  # seconds of steady traffic
WINDOW = "4s"  # PromQL range: inside the steady traffic, ~4 scrapes
DURATION_METRIC = "http_server_request_duration_seconds"
ORDERS = "/orders/{order_id}"


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    return find_prometheus()


@dataclass
class Service:
    url: str
    metrics_port: int
    store: Path
    process: subprocess.Popen[str]

    def stop(self) -> None:
        """SIGINT: uvicorn runs the lifespan shutdown, which flushes spans and metrics."""
        interrupt(self.process)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    app_port, metrics_port = free_port(), free_port()
    store = tmp_path_factory.mktemp("prom") / "tracekit.db"
    env = {**os.environ, "OTEL_BSP_SCHEDULE_DELAY": "100", "TRACEKIT_EXPORT_LOGS": "false"}
    process = subprocess.Popen(
        [sys.executable, str(APP), str(app_port), str(metrics_port), str(store)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    service = Service(f"http://127.0.0.1:{app_port}", metrics_port, store, process)
    try:
        wait_for(
            lambda: httpx.get(f"{service.url}/orders/warmup").status_code,
            20,
            "the service",
            ignoring=UNREACHABLE,
        )
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def prometheus(
    prometheus_binary: str, service: Service, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("prometheus")
    targets = [f"127.0.0.1:{service.metrics_port}"]
    with running_prometheus(prometheus_binary, directory, "promsvc", targets) as url:
        wait_for(
            lambda: _scalar(url, 'up{job="promsvc"}') == 1.0,
            20,
            "first scrape",
            ignoring=UNREACHABLE,
        )
        yield url


def _query(url: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"query": promql}
    if at is not None:
        params["time"] = at
    body = httpx.get(f"{url}/api/v1/query", params=params).json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _scalar(url: str, promql: str, at: float | None = None) -> float | None:
    result = _query(url, promql, at)
    return float(result[0]["value"][1]) if result else None


@dataclass
class Traffic:
    paths: list[str]
    start: float
    end: float

    def count(self, predicate: Any) -> int:
        return sum(1 for path in self.paths if predicate(path))


def _path_for(i: int) -> str:
    if i % 10 == 5:
        return "/fail"
    if i % 10 == 0:
        return f"/orders/slow-{i}"
    return f"/orders/{i}"


@pytest.fixture(scope="module")
def traffic(service: Service, prometheus: str) -> Traffic:
    """Probe a few unknown URLs, then send steady traffic at RATE for DURATION seconds."""
    with httpx.Client(base_url=service.url) as client:
        for i in range(5):
            # Unknown routes and a hostile header: neither may become a label value.
            client.get(f"/wp-admin/probe-{i}", headers={"X-Evil": f"evil-{i}"})
        paths = [_path_for(i) for i in range(int(RATE * DURATION))]
        start = time.time()
        with ThreadPoolExecutor(16) as pool:
            futures = []
            for i, path in enumerate(paths):
                time.sleep(max(0.0, start + i / RATE - time.time()))
                futures.append(pool.submit(client.get, path))
            statuses = [f.result().status_code for f in futures]
        end = time.time()
    assert statuses.count(500) == paths.count("/fail")
    sent = len(paths) + 5 + 1  # + probes + the fixture's warm-up request
    total = f'sum({DURATION_METRIC}_count{{service_name="promsvc"}})'
    wait_for(
        lambda: _scalar(prometheus, total) == sent,
        20,
        "the last requests to be scraped",
        ignoring=UNREACHABLE,
    )
    return Traffic(paths, start, end)


def test_request_rate_matches_the_traffic_sent(prometheus: str, traffic: Traffic) -> None:
    measured = _scalar(
        prometheus,
        f'sum(rate({DURATION_METRIC}_count{{service_name="promsvc"}}[{WINDOW}]))',
        at=traffic.end,
    )
    sent_rate = len(traffic.paths) / (traffic.end - traffic.start)
    assert measured is not None
    assert measured == pytest.approx(sent_rate, rel=0.25)


def test_error_ratio_matches_the_failures_sent(prometheus: str, traffic: Traffic) -> None:
    selector = 'service_name="promsvc"'
    five_xx = f'{selector},http_response_status_code=~"5.."'
    errors = f"sum(rate({DURATION_METRIC}_count{{{five_xx}}}[{WINDOW}]))"
    all_requests = f"sum(rate({DURATION_METRIC}_count{{{selector}}}[{WINDOW}]))"
    ratio = _scalar(prometheus, f"{errors} / {all_requests}", at=traffic.end)
    assert ratio == pytest.approx(
        traffic.count(lambda p: p == "/fail") / len(traffic.paths), abs=0.04
    )
    # Over the cumulative counters the ratio is exact (the 5 probes and the warm-up are not 5xx).
    exact = _scalar(
        prometheus,
        f'sum({DURATION_METRIC}_count{{{selector},http_response_status_code=~"5.."}})'
        f" / sum({DURATION_METRIC}_count{{{selector}}})",
    )
    assert exact == pytest.approx(traffic.count(lambda p: p == "/fail") / (len(traffic.paths) + 6))


def test_p95_latency_lands_in_the_slow_bucket(prometheus: str, traffic: Traffic) -> None:
    buckets = f'{DURATION_METRIC}_bucket{{service_name="promsvc",http_route="{ORDERS}"}}'
    p95 = _scalar(
        prometheus,
        f"histogram_quantile(0.95, sum by (le) (rate({buckets}[{WINDOW}])))",
        at=traffic.end,
    )
    assert p95 is not None and 0.25 < p95 <= 0.5
    # Over the cumulative buckets: linear interpolation inside the (0.25, 0.5] bucket that holds
    # exactly the slow requests, computed from what was sent.
    slow = traffic.count(lambda p: p.startswith("/orders/slow"))
    fast = traffic.count(lambda p: p.startswith("/orders/")) - slow + 1  # + the warm-up order
    rank = 0.95 * (fast + slow)
    exact = _scalar(prometheus, f"histogram_quantile(0.95, sum by (le) ({buckets}))")
    assert exact == pytest.approx(0.25 + 0.25 * (rank - fast) / slow)


def test_labels_hold_route_templates_only(prometheus: str, traffic: Traffic) -> None:
    series = _query(prometheus, f'{DURATION_METRIC}_count{{service_name="promsvc"}}')
    routes = {s["metric"]["http_route"] for s in series}
    assert routes == {ORDERS, "/fail", "_unmatched"}
    assert {s["metric"]["service_version"] for s in series} == {"1.2.3"}
    everything = _query(prometheus, '{job="promsvc"}')
    assert not any("evil" in value for s in everything for value in s["metric"].values())


def test_exemplars_point_at_exported_server_spans(
    prometheus: str, traffic: Traffic, service: Service
) -> None:
    body = httpx.get(
        f"{prometheus}/api/v1/query_exemplars",
        params={
            "query": f'{DURATION_METRIC}_bucket{{service_name="promsvc"}}',
            "start": traffic.start - 10,
            "end": time.time() + 1,
        },
    ).json()
    assert body["status"] == "success", body
    exemplars = [
        (series["seriesLabels"], e) for series in body["data"] for e in series["exemplars"]
    ]
    assert len(exemplars) >= 3
    service.stop()  # flush every span into the store
    with Store(service.store) as store:
        spans = store.spans_by_trace_ids({e["labels"]["trace_id"] for _, e in exemplars})
    server_spans = {(s.trace_id, s.span_id): s for s in spans if s.kind == "SERVER"}
    for labels, exemplar in exemplars:
        span = server_spans[(exemplar["labels"]["trace_id"], exemplar["labels"]["span_id"])]
        assert span.service == "promsvc"
        assert span.attributes.get("http.route", "_unmatched") == labels["http_route"]
        span_seconds = (span.end_unix_nano - span.start_unix_nano) / 1e9
        assert float(exemplar["value"]) == pytest.approx(span_seconds, abs=0.05)
    slow_bucket = [e for labels, e in exemplars if labels["le"] == "0.5"]
    assert slow_bucket, "the slow bucket must link to a trace"
