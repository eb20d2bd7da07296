"""Requests during which a wall clock stepped back (NTP), as an OpenTelemetry SDK exports them
(an end before the start) through a real receiver into the store ``tracekit diff`` reads.

The store keeps such a span lasting 0 ms (``tracekit.clock_stepped_back_ns``): how long the
request took is unknown, not zero. ``diff`` counts such a request, as ``canary`` does, but does
not time it.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner, Result
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, set_span_in_context

from tracekit.diff import load_schema
from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store
from tracekit_cli.main import cli

REQUESTS = 60
STEPPED = 40  # of version 1.1's requests: their clock went back 1 s while they ran


@pytest.fixture
def store_path(tmp_path: Path) -> Iterator[Path]:
    """Version 1.0 serves in about 100 ms; 1.1 in about 150 ms, the first 40 of its requests
    ending a second before they started."""
    path = tmp_path / "tracekit.db"
    receiver = Receiver(Store(path), ReceiverConfig(port=0))
    receiver.start()
    try:
        serve(receiver, "1.0", 100, stepped=0)
        serve(receiver, "1.1", 150, stepped=STEPPED)
    finally:
        receiver.stop()
    yield path


def serve(receiver: Receiver, version: str, ms: float, stepped: int) -> None:
    """GET /orders/{id} of ``version``: a server span and a child loading the order (half the
    time), exported by the SDK over OTLP/HTTP in the last ten minutes."""
    resource = Resource.create({"service.name": "orders", "service.version": version})
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("orders")
    rng = random.Random(version)
    first = time.time_ns() - 600 * 10**9
    for number in range(REQUESTS):
        ids = {"correlation.id": f"req-{version}-{number}"}
        start = first + rng.randrange(300 * 10**9)
        took = int(ms * 1e6 * rng.uniform(0.9, 1.1))
        root = tracer.start_span("GET /orders/{id}", kind=SpanKind.SERVER, start_time=start,
                                 attributes={**ids, "http.request.method": "GET",
                                             "http.route": "/orders/{id}",
                                             "http.response.status_code": 200})  # fmt: skip
        load = tracer.start_span("load order", context=set_span_in_context(root),
                                 start_time=start + 10**6, attributes=ids)  # fmt: skip
        load.end(end_time=start + 10**6 + took // 2)
        root.end(end_time=start - 10**9 if number < stepped else start + took)
    provider.shutdown()


def diff(store_path: Path, *args: str) -> Result:
    return CliRunner().invoke(
        cli, ["diff", *args, "--store", str(store_path)], env={"COLUMNS": "200"}
    )


def as_json(result: Result) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(result.stdout)
    jsonschema.validate(document, load_schema())
    return document


SETS = ("--service", "orders", "--a", "service.version=1.0", "--b", "service.version=1.1")


def test_a_set_whose_requests_stepped_back_is_not_timed_faster_than_it_is(
    store_path: Path,
) -> None:
    """Version 1.1 is 1.5 times slower; its 40 stepped requests were timed at about 0 ms: '+1.7
    ms mean (+2%): no timing difference', the server's self time 49.4 ms -> 25.4 ms (faster),
    and no word why."""
    document = as_json(diff(store_path, *SETS, "--format", "json"))
    assert (document["a"]["requests"], document["b"]["requests"]) == (REQUESTS, REQUESTS)
    assert document["b"]["mean_duration_ms"] > 130  # the 20 timed requests'
    assert document["duration_test"]["verdict"] == "changed"
    assert document["duration_delta_ms"] > 30
    (warning,) = document["warnings"]
    assert warning.startswith("set B (service.version=1.1): 40 of its 60 requests ran while a")

    text = diff(store_path, *SETS, "--format", "text")
    assert "60 requests (40 untimed)" in text.stdout
    assert "counted, not timed" in text.stdout
    assert text.exit_code == 1


def test_a_request_whose_clock_stepped_back_is_not_timed_against_another(
    store_path: Path,
) -> None:
    """'-24.5 ms end to end (-24%): 206% in orders: GET /orders/{id}' and a timing change of
    -100.5 ms, for a request whose server span lasted no time only because its clock went back."""
    result = diff(store_path, "req-1.0-5", "req-1.1-3", "--format", "text")
    assert result.stdout.splitlines()[2] == (
        "timing not compared: a clock stepped back while B ran (a span kept lasting 0 ms), so"
        " how long it took is unknown"
    )
    assert "\n  timing " not in result.stdout and "where the time went" not in result.stdout
    assert "ends before it starts" in result.stdout  # the warning that says which span

    document = as_json(diff(store_path, "req-1.0-5", "req-1.1-3", "--format", "json"))
    assert document["reasons"] == ["resources"]  # the version; not timing
    assert document["attribution"] == []
    assert result.exit_code == 1


def test_the_rows_of_a_request_whose_clock_stepped_back_are_not_timed(store_path: Path) -> None:
    """Under 'timing not compared', B's line read '81.2 ms' and its rows '100.5 ms  0.0 ms
    -100.5 ms  orders: GET /orders/{id}': the times the headline calls unknown, as 0 ms and a
    change."""
    result = diff(store_path, "req-1.0-5", "req-1.1-3", "--format", "text")
    lines = result.stdout.splitlines()
    assert lines[1].startswith("B req-1.1-3  untimed, start ")
    rows = [line.split() for line in lines if line.endswith(("orders/{id}", "load order"))]
    assert [row[2:4] for row in rows] == [["untimed", "-"], ["untimed", "-"]]
    assert "0.0 ms" not in result.stdout

    both = diff(store_path, "req-1.1-5", "req-1.1-3", "--format", "text").stdout.splitlines()
    assert both[0].startswith("A req-1.1-5  untimed, start ")
    rows = [line.split() for line in both if line.endswith(("orders/{id}", "load order"))]
    assert rows == [["untimed", "untimed", "-", "orders:", "GET", "/orders/{id}"],
                    ["untimed", "untimed", "-", "`-", "orders:", "load", "order"]]  # fmt: skip


@pytest.fixture
def all_stepped_store(tmp_path: Path) -> Iterator[Path]:
    """As ``store_path``, but every request of 1.1 ended a second before it started."""
    path = tmp_path / "tracekit.db"
    receiver = Receiver(Store(path), ReceiverConfig(port=0))
    receiver.start()
    try:
        serve(receiver, "1.0", 100, stepped=0)
        serve(receiver, "1.1", 150, stepped=REQUESTS)
    finally:
        receiver.stop()
    yield path


def test_a_set_none_of_whose_requests_was_timed_is_not_read_as_0_ms(
    all_stepped_store: Path,
) -> None:
    """'60 requests (60 untimed), mean 0.0 ms, median 0.0 ms', each node '-49.7 ms', and 'where
    the time went (critical path, adds up to -99.4 ms mean)': a set no request of which was
    timed, read as one 99.4 ms faster."""
    result = diff(all_stepped_store, *SETS, "--format", "text")
    lines = result.stdout.splitlines()
    assert lines[1] == "B service.version=1.1  60 requests (60 untimed), not timed"
    assert lines[2] == (
        "timing not compared: a clock stepped back in every request of B (a span kept lasting"
        " 0 ms), so how long they took is unknown"
    )
    assert "0.0 ms" not in result.stdout and "where the time went" not in result.stdout
    rows = [line.split() for line in lines if line.endswith(("orders/{id}", "load order"))]
    assert [row[:2] for row in rows] == [["?", "-"], ["?", "-"]]
    assert "60 and 60 requests reach it, 60 and 0 of them timed" in result.stdout

    document = as_json(diff(all_stepped_store, *SETS, "--format", "json"))
    assert document["attribution"] == []
    assert [node["contribution_ms"] for node in document["nodes"]] == [0.0, 0.0]
