"""The official OpenTelemetry JS SDK exporting to the receiver, as a Node.js service would.

The SDK is installed at the exact versions of ``js_sdk/package-lock.json`` with ``npm ci``. Its
OTLP/HTTP exporters (``exporter-trace-otlp-proto`` and ``-http``) always stream the body with
``Transfer-Encoding: chunked``, gzip or not. Its gRPC exporter, its log exporters (HTTP JSON,
protobuf, gRPC) and its metric exporters are taken too. A Node service and a tracekit Python
service call each other, and the store must hold one trace with the parents right in both
directions. With
OpenTelemetry JS's own propagators (W3C, B3 single and multi, X-Ray) on the Node side, the same
round trip keeps the sampling decision (B3's debug flag too), the baggage and the correlation ID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from conditions import wait_for
from loopback import free_port
from tests.receiver._js_sdk import JS, start_service, stop_service

from tracekit.path import reconstruct
from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.records import SpanRecord
from tracekit.store import Store

TRACE = [sys.executable, "-c", "from tracekit_cli.main import main; main()", "trace"]
T = TypeVar("T")


def _export(  # type: ignore[type-arg]
    node: str, receiver: Receiver, encoding: str, compression: str, count: int, *options: str
) -> dict:
    script = str(JS / "export_spans.js")
    endpoint = _grpc_endpoint(receiver) if encoding == "grpc" else receiver.endpoint
    done = subprocess.run(
        [node, script, endpoint, encoding, compression, str(count), *options],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _grpc_endpoint(receiver: Receiver) -> str:
    assert receiver.grpc_address is not None, "the receiver was started without gRPC"
    return f"http://127.0.0.1:{receiver.grpc_address[1]}"


@pytest.fixture
def grpc_receiver(store_path: Path) -> Iterator[Receiver]:
    """A receiver serving OTLP/gRPC too, at the defaults otherwise."""
    started = Receiver(Store(store_path), ReceiverConfig(port=0, grpc_port=0)).start()
    yield started
    started.stop()


@pytest.mark.parametrize("encoding", ["proto", "json"])
@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_js_exporters_acknowledged_equals_stored(
    node: str, encoding: str, compression: str, receiver: Receiver, reader: Store
) -> None:
    result = _export(node, receiver, encoding, compression, count=1000)
    assert result == {**result, "acknowledged": 1000, "refused": 0}
    stored = reader.spans_by_trace_ids(result["traceIds"])
    assert len(stored) == 1000
    assert {s.service for s in stored} == {f"node-{encoding}-{compression}"}
    children = [s for s in stored if s.name == "SELECT items"]
    parents = {s.span_id: s for s in stored if s.name == "GET /items/{id}"}
    assert len(children) == 500 and all(c.parent_span_id in parents for c in children)
    assert reader.count_spans() == 1000


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_js_grpc_exporter_sending_batches_at_once_loses_none(
    node: str, compression: str, grpc_receiver: Receiver, store_path: Path
) -> None:
    """OpenTelemetry JS's gRPC exporter sends its batches at once on one connection and retries
    nothing. Past the places for calls receiving (10 at the defaults), each newcomer displaced
    an older call of that same connection, told UNAVAILABLE: most of 60 batches were lost."""
    result = _export(node, grpc_receiver, "grpc", compression, 12_000, "at-once")
    assert result == {**result, "acknowledged": 12_000, "refused": 0}
    with Store(store_path) as reader:
        assert reader.count_spans() == 12_000


def test_js_grpc_exporter_waits_out_a_full_write_queue(node: str, store_path: Path) -> None:
    """A write queue with room for fewer records than arrive at once (as behind a slow disk):
    OTLP/HTTP exporters retry the 503, but JS's gRPC exporter lost each batch told UNAVAILABLE
    (7,800 of 12,000 spans). A call now waits for room within its deadline."""
    config = ReceiverConfig(port=0, grpc_port=0, queue_capacity=300)
    receiver = Receiver(Store(store_path), config).start()
    try:
        result = _export(node, receiver, "grpc", "none", 12_000, "at-once")
    finally:
        receiver.stop()
    assert result == {**result, "acknowledged": 12_000, "refused": 0}
    with Store(store_path) as reader:
        assert reader.count_spans() == 12_000


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_js_spans_linking_to_an_empty_context_are_stored(
    node: str, encoding: str, receiver: Receiver, reader: Store
) -> None:
    result = _export(node, receiver, encoding, "none", 4, "empty-link")
    assert result == {**result, "acknowledged": 4, "refused": 0}
    stored = reader.spans_by_trace_ids(result["traceIds"])
    assert sorted(s.name for s in stored) == ["GET /items/{id}"] * 2 + ["SELECT items"] * 2
    assert all(s.links == [] for s in stored)  # an empty context names no link target


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_js_spans_with_a_ratio_that_is_not_a_number_are_stored(
    node: str, encoding: str, receiver: Receiver, reader: Store
) -> None:
    """OpenTelemetry JS writes a NaN or infinite attribute (a ratio of 0 / 0, a rate of 1 / 0)
    over OTLP/JSON as ``{"doubleValue": null}``, JSON having no NaN. The collector refused each
    such span, and the exporter, told of a partial success, reported SUCCESS: the request was
    missing from ``tracekit trace``. proto3's JSON mapping reads a null as a field not set, so
    the attribute is now stored with no value (over protobuf the value itself arrives)."""
    result = _export(node, receiver, encoding, "none", 4, "not-a-number")
    assert result == {**result, "acknowledged": 4, "refused": 0}
    stored = reader.spans_by_trace_ids(result["traceIds"])
    assert sorted(s.name for s in stored) == ["GET /items/{id}"] * 2 + ["SELECT items"] * 2
    parents = [s.attributes for s in stored if s.name == "GET /items/{id}"]
    ratios = {(attributes["cache.hit_ratio"], attributes["rate"]) for attributes in parents}
    assert ratios == {("NaN", "Infinity") if encoding == "proto" else (None, None)}


def test_js_spans_with_an_integral_number_past_64_bits_are_stored(
    node: str, receiver: Receiver, reader: Store
) -> None:
    """OpenTelemetry JS sends an integral number as an intValue, past 64 bits too (1e21 as
    ``{"intValue": 1e+21}``, 2 ** 64 as its digits). The collector refused each such span over
    OTLP/JSON, and the exporter reported SUCCESS: the request was missing from ``tracekit
    trace``. The number is now kept as the double JavaScript had."""
    result = _export(node, receiver, "json", "none", 4, "huge-integer")
    assert result == {**result, "acknowledged": 4, "refused": 0}
    stored = reader.spans_by_trace_ids(result["traceIds"])
    assert sorted(s.name for s in stored) == ["GET /items/{id}"] * 2 + ["SELECT items"] * 2
    parents = [s.attributes for s in stored if s.name == "GET /items/{id}"]
    assert {(attributes["bytes.total"], attributes["count"]) for attributes in parents} == {
        (1e21, 2.0**64)
    }


@pytest.mark.parametrize("transport", ["json", "proto", "grpc"])
@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_js_log_and_metric_exporters(
    node: str, transport: str, compression: str, grpc_receiver: Receiver, store_path: Path
) -> None:
    """A Node service's log records, sent by the JS SDK's log exporter, show under their request
    in ``tracekit trace``; its metrics are acknowledged (and dropped), so its exporter does not
    log an error at every interval."""
    script = str(JS / "export_signals.js")
    endpoints = [grpc_receiver.endpoint, _grpc_endpoint(grpc_receiver)]
    done = subprocess.run(
        [node, script, *endpoints, transport, compression], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    sent = json.loads(done.stdout)
    assert (sent["traces"], sent["logs"], sent["metrics"]) == (0, 0, 0)  # ExportResultCode.SUCCESS
    shown = subprocess.run(
        [*TRACE, sent["traceId"], "--store", str(store_path), "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    logs = json.loads(shown.stdout)["logs"]
    service = f"node-{transport}-{compression}"
    assert [(r["span_id"], r["service"], r["severity"], r["body"]) for r in logs] == [
        (sent["spanId"], service, "INFO", "order loaded"),
        (sent["spanId"], service, "ERROR", "payment declined"),
    ]
    with Store(store_path) as reader:
        stored = reader.logs_by_trace_ids([sent["traceId"]])
    assert [r.attributes for r in stored] == [{"order.id": 42}, {}]


PYTHON_SERVICE = textwrap.dedent(
    """
    import os, signal, sys, threading
    import requests
    import tracekit
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Request, Response
    from tracekit.wsgi import TracekitMiddleware

    tracekit.init(service_name="pricing-python", exporter="otlp")

    def app(environ, start_response):
        if Request(environ).path != "/price":
            return Response("not found", status=404)(environ, start_response)
        stock = requests.get(os.environ["NODE"] + "/stock", timeout=10).text
        return Response(f"12.50 x{stock}")(environ, start_response)

    server = make_server("127.0.0.1", int(sys.argv[1]), TracekitMiddleware(app), threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print("listening", flush=True)
    server.serve_forever()
    tracekit.shutdown()
    """
)


@pytest.fixture
def services(node: str, receiver: Receiver) -> Iterator[str]:
    """The Node service and the Python service, exporting to the receiver; yields Node's URL."""
    yield from _node_and_python(
        node, "service.js", PYTHON_SERVICE, {"COLLECTOR": receiver.endpoint}, receiver
    )


def _node_and_python(
    node: str, script: str, python_code: str, env: dict[str, str], receiver: Receiver
) -> Iterator[str]:
    """Node's ``script`` and the Python service ``python_code``, each told the other's URL
    (``PEER``, ``NODE``), exporting to the receiver, with ``env`` on top; yields Node's URL."""
    node_port, python_port = free_port(), free_port()
    node_url, python_url = f"http://127.0.0.1:{node_port}", f"http://127.0.0.1:{python_port}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    base |= {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "NODE": node_url}
    base |= {"TRACEKIT_METRICS_PORT": str(free_port()), **env}
    python = start_service([sys.executable, "-c", python_code, str(python_port)], base)
    try:
        node_env = {**base, "PEER": python_url, "PORT": str(node_port)}
        js = start_service([node, str(JS / script)], node_env)
        try:
            yield node_url
        finally:
            stop_service(js)
    finally:
        stop_service(python)


def _at_least(count: int, spans: list[SpanRecord]) -> list[SpanRecord] | None:
    return spans if len(spans) >= count else None


def test_node_and_python_services_make_one_trace(
    services: str, receiver: Receiver, reader: Store
) -> None:
    with urllib.request.urlopen(f"{services}/checkout", timeout=30) as response:
        assert response.read() == b"price 12.50 x7\n"
    spans = wait_for(lambda: _at_least(5, reader.spans_since(0)), 15, "five spans stored")
    assert len({s.trace_id for s in spans}) == 1, "one trace across both languages"
    by_id = {s.span_id: s for s in spans}

    def one(service: str, kind: str, parent: SpanRecord | None) -> SpanRecord:
        (found,) = [
            s for s in spans if s.service == service and s.kind == kind
            and s.parent_span_id == (parent.span_id if parent else None)
        ]  # fmt: skip
        return found

    entry = one("storefront-node", "SERVER", None)
    call = one("storefront-node", "CLIENT", entry)
    priced = one("pricing-python", "SERVER", call)
    callback = one("pricing-python", "CLIENT", priced)
    stock = one("storefront-node", "SERVER", callback)
    assert len(by_id) == 5 and stock.trace_id == entry.trace_id
    # Node's HTTP instrumentation writes the older conventions (http.method, http.target...):
    # the hops read the same as for tracekit's stable names.
    path = reconstruct(reader, entry.trace_id)
    assert path is not None
    assert [(h.from_service, h.to_service, h.destination) for h in path.hops] == [
        ("storefront-node", "pricing-python", "GET /price"),
        ("pricing-python", "storefront-node", "GET /stock"),
    ]


PYTHON_PEER = textwrap.dedent(
    """
    import json, os, signal, sys, threading
    import requests
    import tracekit
    from opentelemetry import baggage, trace
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Request, Response
    from tracekit.wsgi import TracekitMiddleware

    tracekit.init(service_name="pricing-python", exporter="otlp")

    def app(environ, start_response):
        if Request(environ).path != "/price":
            return Response("not found", status=404)(environ, start_response)
        span = trace.get_current_span()
        stock = requests.get(os.environ["NODE"] + "/stock", timeout=10).json()
        seen = {
            "trace_id": format(span.get_span_context().trace_id, "032x"),
            "span_id": format(span.get_span_context().span_id, "016x"),
            "parent": format(span.parent.span_id, "016x") if span.is_recording() else None,
            "sampled": span.get_span_context().trace_flags.sampled,
            "recording": span.is_recording(),
            "correlation_id": tracekit.correlation_id(),
            "baggage": dict(baggage.get_all()),
            "stock": stock,
        }
        return Response(json.dumps(seen), mimetype="application/json")(environ, start_response)

    server = make_server("127.0.0.1", int(sys.argv[1]), TracekitMiddleware(app), threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print("listening", flush=True)
    server.serve_forever()
    tracekit.shutdown()
    """
)
BAGGAGE_SENT = {"correlation.id": "order-42", "user name": "Amélie Dupont", "plan": "a+b=c; 100%"}


@pytest.fixture(params=["tracecontext", "b3", "b3multi", "xray", "tracecontext,b3multi,xray"])
def propagating_services(
    request: pytest.FixtureRequest, node: str, receiver: Receiver
) -> Iterator[str]:
    """A Node service carrying context with OpenTelemetry JS's propagators and a tracekit
    Python service with the same ``OTEL_PROPAGATORS`` (plus ``baggage``); yields Node's URL."""
    names = f"{request.param},baggage"
    env = {"OTEL_PROPAGATORS": names, "PROPAGATORS": names}
    env |= {"OTEL_BSP_SCHEDULE_DELAY": "100"}  # the CLIENT span is read from the store
    yield from _node_and_python(node, "propagation.js", PYTHON_PEER, env, receiver)


def _round_trip(node_url: str, sampled: bool, **headers: str) -> dict:  # type: ignore[type-arg]
    """Node's /start, with the trace ``headers`` of its caller (none: Node starts the trace)."""
    request = urllib.request.Request(f"{node_url}/start?sampled={int(sampled)}", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def _python_spans(reader: Store, trace_id: str) -> list[SpanRecord]:
    """The Python service's SERVER and CLIENT spans of ``trace_id``, once stored."""
    return wait_for(lambda: _at_least(2, reader.spans_by_trace_ids([trace_id])), 15, "spans")


def test_js_propagators_and_tracekit_carry_one_context_both_ways(
    propagating_services: str, reader: Store
) -> None:
    """Node -> Python -> Node with OpenTelemetry JS's own propagators on the Node side: one
    trace, each side's parent the span that called it, the sampling decision kept, baggage
    and the correlation ID intact both ways."""
    for sampled in (True, False):
        node = _round_trip(propagating_services, sampled)
        python, back = node["peer"], node["peer"]["stock"]
        assert python["trace_id"] == back["trace_id"] == node["trace_id"]
        assert python["sampled"] is python["recording"] is back["sampled"] is sampled
        assert python["baggage"] == back["baggage"] == BAGGAGE_SENT
        assert python["correlation_id"] == back["correlation_id"] == "order-42"
        if sampled:  # Node's CLIENT span is the Python SERVER's parent, and the other way
            assert python["parent"] == node["client"]
            (call,) = [s for s in _python_spans(reader, node["trace_id"]) if s.kind == "CLIENT"]
            assert (call.span_id, call.parent_span_id) == (back["parent"], python["span_id"])


DEBUG_TRACE, DEBUG_PARENT = "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"
DEBUG_HEADERS = {
    "b3": {"b3": f"{DEBUG_TRACE}-{DEBUG_PARENT}-d"},
    "b3multi": {"X-B3-TraceId": DEBUG_TRACE, "X-B3-SpanId": DEBUG_PARENT, "X-B3-Flags": "1"},
}


@pytest.mark.parametrize("propagating_services", ["b3", "b3multi"], indirect=True)
def test_b3_debug_flag_crosses_node_and_tracekit_both_ways(
    propagating_services: str, request: pytest.FixtureRequest
) -> None:
    """A debug request (Envoy's ``x-b3-flags: 1``, a Zipkin UI's) entering Node: Node sends it
    on as debug to the tracekit service, which sends it on as debug to Node again, in the
    encoding each side was told to write."""
    encoding = request.node.callspec.params["propagating_services"]
    # (the caller's flag decides, not ?sampled)
    node = _round_trip(propagating_services, False, **DEBUG_HEADERS[encoding])
    python, back = node["peer"], node["peer"]["stock"]
    assert node["trace_id"] == python["trace_id"] == back["trace_id"] == DEBUG_TRACE
    assert python["sampled"] is python["recording"] is back["sampled"] is True
    assert python["parent"] == node["client"]
    sent, onward = node["sent"], back["onward"]  # Node's to Python; Node's after Python's
    if encoding == "b3":
        assert sent["b3"] == f"{DEBUG_TRACE}-{node['client']}-d"
        assert onward["b3"] == f"{DEBUG_TRACE}-{back['parent']}-d"
    else:
        assert (sent["x-b3-flags"], onward["x-b3-flags"]) == ("1", "1")
        assert "x-b3-sampled" not in sent and "x-b3-sampled" not in onward  # debug implies it
