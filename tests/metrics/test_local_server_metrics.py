"""The single-process HTTP server metrics expose exactly what prometheus-client's classes would.

Two fresh registries get the same requests: one through tracekit's local families (the default
outside multiprocess mode), one through prometheus-client's ``Histogram`` and ``Gauge``
(``local=False``, the multiprocess-mode path). Their scrapes, in the plain text format and in
OpenMetrics, must match line for line once the wall-clock values (``_created`` and exemplar
timestamps) are set aside; those are checked to lie within the test's run instead.
"""

from __future__ import annotations

import math
import re
import threading
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from tracekit import metrics

_CREATED = re.compile(r"^(\S+_created\{.*\}) (\S+)$")
_EXEMPLAR_TIME = re.compile(r"^(.* # \{[^}]*\} \S+) (\S+)$")

REQUESTS = [  # method, route, status, seconds
    ("GET", "/orders/{order_id}", 200, 0.004),
    ("GET", "/orders/{order_id}", 200, 0.005),  # exactly on a bound: that bucket
    ("GET", "/orders/{order_id}", 200, 0.3),
    ("POST", "/orders", 201, 12.0),  # beyond the last bound: +Inf only
    ("GET", None, 404, 0.0),  # unmatched route
    ("_OTHER", "/orders", 0, 0.02),  # no response started: empty status
    ("GET", "/orders/{order_id}", 500, -0.001),  # a clock step back: first bucket
]


def _record(server: metrics.HttpServerMetrics) -> None:
    sampled = TracerProvider().get_tracer("t")
    unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("t")
    for i, (method, route, status, seconds) in enumerate(REQUESTS):
        span = (sampled if i % 3 else unsampled).start_span("GET")
        server.request_started()
        server.request_finished(method, route, status, seconds, span if i != 4 else None)
    server.request_started()  # one still in flight


def _scrapes(registry: CollectorRegistry) -> tuple[list[str], list[str], list[str]]:
    """Text and OpenMetrics lines with clock values replaced, and the clock values."""
    clocks: list[str] = []

    def blank(line: str) -> str:
        match = _CREATED.match(line) or _EXEMPLAR_TIME.match(line)
        if match is None:
            return line
        clocks.append(match.group(2))
        return match.group(1) + " <clock>"

    text = [blank(line) for line in generate_latest(registry).decode().splitlines()]
    openmetrics = [blank(line) for line in generate_openmetrics(registry).decode().splitlines()]
    return text, openmetrics, clocks


def test_local_families_scrape_like_prometheus_client() -> None:
    started = time.time()
    local_registry, shared_registry = CollectorRegistry(), CollectorRegistry()
    local = metrics.HttpServerMetrics("shop", "1.2", local_registry)
    shared = metrics.HttpServerMetrics("shop", "1.2", shared_registry, local=False)
    _record(local)
    _record(shared)
    local_text, local_om, local_clocks = _scrapes(local_registry)
    shared_text, shared_om, _ = _scrapes(shared_registry)

    assert local_text == shared_text
    exemplar_lines = [line for line in local_om if " # {" in line]
    assert len(exemplar_lines) == 3  # sampled spans only, one per bucket they landed in
    assert all(re.search(r'trace_id="[0-9a-f]{32}"', line) for line in exemplar_lines)
    # Exemplars hold each bucket's latest sampled trace: same values, span ids differ per run.
    ids = re.compile(r'(span_id|trace_id)="[0-9a-f]+"')
    assert [ids.sub("<id>", line) for line in local_om] == [
        ids.sub("<id>", line) for line in shared_om
    ]
    assert local_clocks and all(started <= float(c) <= time.time() for c in local_clocks)
    assert 'http_server_active_requests{service_name="shop",service_version="1.2"} 1.0' in (
        local_text
    )


def test_family_names_stay_reserved_in_the_registry() -> None:
    registry = CollectorRegistry()
    metrics.HttpServerMetrics("svc", None, registry)
    for name in ("http_server_request_duration_seconds_bucket", "http_server_active_requests"):
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            Gauge(name, "clash", registry=registry)


def test_concurrent_requests_lose_no_updates() -> None:
    """Eight threads record 5,000 requests each: every count, bucket and sum is exact."""
    registry = CollectorRegistry()
    server = metrics.HttpServerMetrics("svc", None, registry)
    span = TracerProvider().get_tracer("t").start_span("GET")
    threads_n, per_thread = 8, 5000
    barrier = threading.Barrier(threads_n)

    def hammer(worker: int) -> None:
        route = "/even" if worker % 2 == 0 else "/odd"
        barrier.wait()
        for i in range(per_thread):
            server.request_started()
            # Binary fractions: the sum is exact whatever order the threads add in.
            server.request_finished("GET", route, 200, 0.5 if i % 2 else 0.0078125, span)

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for route in ("/even", "/odd"):
        labels = {
            "http_request_method": "GET",
            "http_route": route,
            "http_response_status_code": "200",
            "error_type": "",
            "service_name": "svc",
            "service_version": "",
        }
        total = threads_n // 2 * per_thread
        name = "http_server_request_duration_seconds"
        assert registry.get_sample_value(name + "_count", labels) == total
        assert registry.get_sample_value(name + "_bucket", {**labels, "le": "0.01"}) == total / 2
        assert registry.get_sample_value(name + "_bucket", {**labels, "le": "0.5"}) == total
        expected_sum = total / 2 * 0.5 + total / 2 * 0.0078125
        assert math.isclose(registry.get_sample_value(name + "_sum", labels) or 0, expected_sum)
        assert registry.get_sample_value(name + "_sum", labels) == expected_sum
    assert (
        registry.get_sample_value(
            "http_server_active_requests", {"service_name": "svc", "service_version": ""}
        )
        == 0.0
    )


@pytest.mark.parametrize("local", [True, False], ids=["local", "prometheus-client"])
def test_two_services_record_into_one_family_each(local: bool) -> None:
    """A second service in the registry (a re-init under a new name, a middleware's own
    service_name) adds its series to the families the first one registered."""
    registry = CollectorRegistry()
    for name in ("first", "second"):
        server = metrics.HttpServerMetrics(name, None, registry, local=local)
        server.request_started()
        server.request_finished("GET", "/x", 200, 0.01, None)
    messaging = metrics.MessagingMetrics("second", None, registry, local=local)
    messaging.published("kafka", "orders", 0.01, None)

    text = generate_latest(registry).decode()
    assert text.count("# TYPE http_server_request_duration_seconds histogram") == 1
    assert text.count("# TYPE http_server_active_requests gauge") == 1
    for name in ("first", "second"):
        labels = {"http_request_method": "GET", "http_route": "/x",
                  "http_response_status_code": "200", "error_type": "",
                  "service_name": name, "service_version": ""}  # fmt: skip
        assert registry.get_sample_value("http_server_request_duration_seconds_count", labels) == 1
        assert (
            f'http_server_active_requests{{service_name="{name}",service_version=""}} 0.0' in text
        )
    sent = {"messaging_system": "kafka", "messaging_destination_name": "orders",
            "service_name": "second", "service_version": ""}  # fmt: skip
    assert registry.get_sample_value("messaging_client_sent_messages_total", sent) == 1
