"""The single-process messaging metrics expose exactly what prometheus-client's classes would.

The same publishes, deliveries and failures go to two fresh registries: one through tracekit's
local families (the default outside multiprocess mode: histograms counted under one lock, the
sent/consumed/failed counters read from them at scrape time), one through prometheus-client's
``Histogram`` and ``Counter`` (``local=False``, the multiprocess-mode path). Their scrapes, plain
text and OpenMetrics, must match line for line once wall-clock values (``_created`` series,
exemplar timestamps) and span ids are set aside.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from tracekit import metrics

_CLOCK = re.compile(r"^(\S+_created\{.*\} )\S+$|^(.* # \{[^}]*\} \S+ )\S+$")
_IDS = re.compile(r'(span_id|trace_id)="[0-9a-f]+"')

# (kind, system, destination, seconds, error type)
EVENTS = [
    ("published", "rabbitmq", "orders", 0.004, None),
    ("published", "rabbitmq", "orders", 0.005, None),  # exactly on a bound: that bucket
    ("published", "kafka", "payments", 12.0, None),  # beyond the last bound: +Inf only
    ("published", "rabbitmq", "orders", 0.02, "ConnectionError"),  # refused: none sent
    ("published", "rabbitmq", "dead", 0.02, "ConnectionError"),  # no message ever sent there
    ("published-batch", "rabbitmq", "orders", 0.01, None),  # one publish, 5 messages
    ("waited", "rabbitmq", "orders", 0.2, None),
    ("waited", "rabbitmq", "orders", -0.01, None),  # a clock step back: counted as no wait
    ("processed", "rabbitmq", "orders", 0.03, None),
    ("processed", "rabbitmq", "orders", 0.3, "KeyError"),
    ("processed", "kafka", "payments", 0.02, None),
    ("processed", "rabbitmq", "orders", 0.07, "KeyError"),
    ("processed", "rabbitmq", "orders", 0.01, "TimeoutError"),
    ("processed", "rabbitmq", "x" * 300, 0.01, "E" * 200),  # labels cut to 128 characters
]


def _record(family: metrics.MessagingMetrics) -> None:
    sampled = TracerProvider().get_tracer("t")
    unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("t")
    for i, (kind, system, destination, seconds, error_type) in enumerate(EVENTS):
        span = (sampled if i % 3 else unsampled).start_span("process")
        if kind == "published":
            family.published(system, destination, seconds, span, error_type)
        elif kind == "published-batch":
            family.published(system, destination, seconds, span, messages=5)
        elif kind == "waited":
            family.waited(system, destination, seconds, span if i != 4 else None)
        else:
            family.processed(system, destination, seconds, span, error_type)


def _scrapes(registry: CollectorRegistry) -> tuple[list[str], list[str], list[float]]:
    """Text and OpenMetrics lines with clock values and ids blanked, and the clock values."""
    clocks: list[float] = []

    def blank(line: str) -> str:
        match = _CLOCK.match(line)
        if match is None:
            return _IDS.sub("<id>", line)
        clocks.append(float(line.rsplit(" ", 1)[1]))
        return _IDS.sub("<id>", (match.group(1) or match.group(2)) + "<clock>")

    text = [blank(line) for line in generate_latest(registry).decode().splitlines()]
    openmetrics = [blank(line) for line in generate_openmetrics(registry).decode().splitlines()]
    return text, openmetrics, clocks


def test_local_messaging_families_scrape_like_prometheus_client() -> None:
    started = time.time()
    local_registry, shared_registry = CollectorRegistry(), CollectorRegistry()
    _record(metrics.MessagingMetrics("shop", "1.2", local_registry))
    _record(metrics.MessagingMetrics("shop", "1.2", shared_registry, local=False))
    local_text, local_om, local_clocks = _scrapes(local_registry)
    shared_text, shared_om, _ = _scrapes(shared_registry)

    assert local_text == shared_text
    assert local_om == shared_om
    assert local_clocks and all(started <= c <= time.time() for c in local_clocks)
    labels = {
        "messaging_system": "rabbitmq",
        "messaging_destination_name": "orders",
        "service_name": "shop",
        "service_version": "1.2",
    }
    value = local_registry.get_sample_value
    assert value("messaging_client_sent_messages_total", labels) == 2 + 5  # not the refused one
    assert (
        value(
            "messaging_client_sent_messages_total", {**labels, "messaging_destination_name": "dead"}
        )
        is None
    )
    publishes = {**labels, "error_type": ""}
    assert value("messaging_client_operation_duration_seconds_count", publishes) == 3
    refused = {**labels, "error_type": "ConnectionError"}
    assert value("messaging_client_operation_duration_seconds_count", refused) == 1
    assert value("messaging_client_consumed_messages_total", labels) == 4
    assert value("tracekit_messaging_failed_messages_total", {**labels, "error_type": "KeyError"})
    assert value("tracekit_messaging_queue_wait_seconds_bucket", {**labels, "le": "0.001"}) == 1
    assert any(" # {" in line for line in local_om), "sampled spans leave exemplars"


def test_local_messaging_families_are_the_default_and_reserve_their_names() -> None:
    registry = CollectorRegistry()
    metrics.MessagingMetrics("svc", None, registry).published("kafka", "t", 0.01, None)
    assert registry.get_sample_value(
        "messaging_client_sent_messages_total",
        {
            "messaging_system": "kafka",
            "messaging_destination_name": "t",
            "service_name": "svc",
            "service_version": "",
        },
    )
    for name in ("messaging_client_sent_messages", "tracekit_messaging_failed_messages"):
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            Counter(name, "clash", registry=registry)


def test_concurrent_consumers_lose_no_counts() -> None:
    """Eight threads consume 5,000 messages each, every third failing: every count is exact."""
    registry = CollectorRegistry()
    family = metrics.MessagingMetrics("svc", None, registry)
    span = TracerProvider().get_tracer("t").start_span("process")
    threads_n, per_thread = 8, 5000
    barrier = threading.Barrier(threads_n)

    def consume() -> None:
        barrier.wait()
        for i in range(per_thread):
            family.waited("rabbitmq", "q", 0.25, span)
            family.processed("rabbitmq", "q", 0.5, span, "KeyError" if i % 3 == 0 else None)

    threads = [threading.Thread(target=consume) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    labels = {
        "messaging_system": "rabbitmq",
        "messaging_destination_name": "q",
        "service_name": "svc",
        "service_version": "",
    }
    failed_per_thread = len(range(0, per_thread, 3))
    value = registry.get_sample_value
    assert value("messaging_client_consumed_messages_total", labels) == threads_n * per_thread
    assert (
        value("tracekit_messaging_failed_messages_total", {**labels, "error_type": "KeyError"})
        == threads_n * failed_per_thread
    )
    assert value("tracekit_messaging_queue_wait_seconds_count", labels) == threads_n * per_thread
    assert value("tracekit_messaging_queue_wait_seconds_sum", labels) == threads_n * per_thread / 4
