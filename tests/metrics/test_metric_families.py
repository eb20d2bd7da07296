"""Metric families in-process, each test on a fresh registry: what a scrape shows a user.

Real servers on loopback: uvicorn in a thread for the ASGI app with the ``/metrics`` mount,
werkzeug for the HTTP client's target, and prometheus-client's own server for ``install``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from conditions import wait_for
from loopback import free_port, serving_werkzeug, start_uvicorn, start_werkzeug
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.sync.client import connect
from werkzeug.wrappers import Response

from tracekit import config, instrumentation, metrics
from tracekit import messaging as tracekit_messaging
from tracekit._metrics import families
from tracekit._metrics import server as metrics_server
from tracekit._runtime import guard
from tracekit.asgi import TracekitMiddleware

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@pytest.fixture
def asgi_service() -> Iterator[str]:
    """A Starlette app with tracekit's middleware and its own registry mounted at /metrics."""
    registry = CollectorRegistry()

    async def order(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok", status_code=int(request.query_params.get("status", 200)))

    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()  # held open until the client says something
        await websocket.close()

    routes = [
        Route("/orders/{order_id}", order),
        WebSocketRoute("/chat", chat),
        Mount("/metrics", metrics.asgi_metrics_app(registry)),
    ]
    app = TracekitMiddleware(
        Starlette(routes=routes),
        registry=registry,
        service_name="shop",
        excluded_urls=["^/metrics"],
    )
    url, stop = start_uvicorn(app)
    yield url
    stop()


def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_openmetrics_scrape_shows_route_templates_and_exemplars(
    asgi_service: str, spans: InMemorySpanExporter
) -> None:
    with httpx.Client(base_url=asgi_service) as client:
        client.get("/orders/17", headers={"X-Correlation-ID": "scrape-1"})
        client.get("/orders/18?status=503")
        client.get("/no/such/page", headers={"X-Tenant": "tenant-from-header"})
        response = client.get("/metrics/", headers={"Accept": OPENMETRICS})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert "tenant-from-header" not in response.text and "/orders/17" not in response.text
    family = _families(response.text)["http_server_request_duration_seconds"]
    counts = {
        (s.labels["http_route"], s.labels["http_response_status_code"]): s.value
        for s in family.samples
        if s.name.endswith("_count")
    }
    assert counts == {
        ("/orders/{order_id}", "200"): 1,
        ("/orders/{order_id}", "503"): 1,
        ("_unmatched", "404"): 1,
    }

    server_spans = {
        (f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}")
        for s in spans.get_finished_spans()
        if s.kind.name == "SERVER"
    }
    exemplars = [s.exemplar for s in family.samples if s.exemplar is not None]
    assert exemplars, "histogram buckets must carry exemplars in OpenMetrics"
    for exemplar in exemplars:
        assert (exemplar.labels["trace_id"], exemplar.labels["span_id"]) in server_spans


def test_plain_prometheus_format_still_served(asgi_service: str) -> None:
    httpx.get(f"{asgi_service}/orders/1")
    response = httpx.get(f"{asgi_service}/metrics/")
    assert response.headers["content-type"].startswith("text/plain")
    assert (
        'http_server_active_requests{service_name="shop",service_version=""} 0.0' in response.text
    )


@pytest.fixture
def werkzeug_target() -> Iterator[str]:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        status = 404 if environ["PATH_INFO"] == "/missing" else 200
        return Response("body", status=status)(environ, start_response)

    url, stop = start_werkzeug(app)
    yield url
    stop()


CLIENT_SERVICE = "metric-families-client"


def _client_count(**labels: str) -> float:
    base = {"http_request_method": "GET", "server_address": "127.0.0.1", "service_version": ""}
    value = REGISTRY.get_sample_value(
        "http_client_request_duration_seconds_count",
        {"service_name": CLIENT_SERVICE, "error_type": "", **base, **labels},
    )
    return value or 0.0


def test_http_client_requests_are_measured(
    werkzeug_target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service of its own: the suite's other client calls, each to a server on a new port,
    fill the default service's 100 destinations, past which a new one is counted as _other."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", CLIENT_SERVICE)
    port = werkzeug_target.rsplit(":", 1)[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = str(closed.getsockname()[1])
    closed.close()
    before_ok = _client_count(server_port=port, http_response_status_code="200")
    before_404 = _client_count(server_port=port, http_response_status_code="404", error_type="404")
    instrumentation.instrument(["requests"])
    try:
        requests.get(f"{werkzeug_target}/fine", timeout=5)
        requests.get(f"{werkzeug_target}/missing", timeout=5)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{closed_port}/", timeout=5)
    finally:
        instrumentation.uninstrument()
    assert _client_count(server_port=port, http_response_status_code="200") == before_ok + 1
    assert (
        _client_count(server_port=port, http_response_status_code="404", error_type="404")
        == before_404 + 1
    )
    failed = _client_count(
        server_port=closed_port, http_response_status_code="", error_type="ConnectionError"
    )
    assert failed == 1


HOSTILE_PEER_SERVICE = "metric-families-hostile-peer"


def test_a_peer_answering_every_status_code_adds_a_bounded_number_of_series(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer chooses the status it answers (a webhook receiver the application's users name):
    one answering each call with another code made a series per code, 400 here from one
    destination, and with 100 such destinations 40,000 series and 720,000 samples a scrape. A
    destination now keeps its first codes; later ones are _other, still failures from 400 up."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", HOSTILE_PEER_SERVICE)

    def peer(environ: dict[str, Any], start_response: Any) -> Any:
        return Response("", status=int(environ["PATH_INFO"].strip("/")))(environ, start_response)

    codes = [200, 404, *(code for code in range(201, 600) if code != 404)]
    with serving_werkzeug(peer) as url:
        instrumentation.instrument(["requests"])
        try:
            with requests.Session() as session:
                for code in codes:
                    assert session.get(f"{url}/{code}", timeout=5).status_code == code
        finally:
            instrumentation.uninstrument()
    counts = {
        (s.labels["http_response_status_code"], s.labels["error_type"]): s.value
        for f in REGISTRY.collect()
        for s in f.samples
        if s.name == "http_client_request_duration_seconds_count"
        and s.labels["service_name"] == HOSTILE_PEER_SERVICE
        and s.labels["server_port"] == url.rsplit(":", 1)[1]
    }
    statuses = {status for status, _ in counts}
    assert len(statuses) == metrics.MAX_CLIENT_STATUS_CODES + 1
    assert {"200", "404", metrics.OTHER_VALUE} <= statuses  # the first codes keep their names
    assert sum(counts.values()) == len(codes)
    failed = sum(count for (_, error_type), count in counts.items() if error_type)
    assert failed == sum(1 for code in codes if code >= 400)


def test_a_websocket_is_traced_but_is_no_http_request_in_the_metrics(
    asgi_service: str, spans: InMemorySpanExporter
) -> None:
    """A connection open for minutes is not a slow request: it stays out of the request
    duration histogram and the in-flight gauge (its SERVER span still covers it)."""
    with httpx.Client(base_url=asgi_service) as client:
        client.get("/orders/1")
        with connect(asgi_service.replace("http://", "ws://") + "/chat") as socket:
            time.sleep(0.3)
            during = _families(client.get("/metrics/", headers={"Accept": OPENMETRICS}).text)
            socket.send("bye")
        time.sleep(0.1)
        after = _families(client.get("/metrics/", headers={"Accept": OPENMETRICS}).text)

    assert [s.value for s in during["http_server_active_requests"].samples] == [0]
    routes = {
        s.labels["http_route"]
        for s in after["http_server_request_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    assert routes == {"/orders/{order_id}"}
    finished = spans.get_finished_spans
    wait_for(lambda: "GET /chat" in [s.name for s in finished()], 5, "the WebSocket's span")


def test_open_ended_labels_are_capped() -> None:
    registry = CollectorRegistry()
    server = metrics.HttpServerMetrics("svc", None, registry)
    for i in range(600):
        server.request_started()
        server.request_finished("GET", f"/generated/{i}", 200, 0.001, None)
    routes = {
        s.labels["http_route"]
        for f in registry.collect()
        for s in f.samples
        if s.name == "http_server_request_duration_seconds_count"
    }
    assert len(routes) == 501 and metrics.OTHER_VALUE in routes
    assert (
        registry.get_sample_value(
            "http_server_request_duration_seconds_count",
            {
                "http_request_method": "GET",
                "http_route": metrics.OTHER_VALUE,
                "http_response_status_code": "200",
                "error_type": "",
                "service_name": "svc",
                "service_version": "",
            },
        )
        == 100
    )


def test_status_codes_outside_http_share_one_value() -> None:
    """An application (or, for a client, a peer) may set any number as the status: each one
    outside 100-599 would be a series of its own."""
    registry = CollectorRegistry()
    server = metrics.HttpServerMetrics("svc", None, registry)
    client = metrics.HttpClientMetrics("svc", None, registry)
    for code in (200, 599, 600, 999, 1000, 123456, 99, -5):
        server.request_started()
        server.request_finished("GET", "/x", code, 0.001, None)
        client.request_finished({"http.request.method": "GET"}, code, None, 0.001, None)

    def labels(sample_name: str, label: str) -> set[str]:
        return {
            s.labels[label] for f in registry.collect() for s in f.samples if s.name == sample_name
        }

    expected = {"200", "599", metrics.OTHER_VALUE}
    assert labels("http_server_request_duration_seconds_count", "http_response_status_code") == (
        expected
    )
    assert labels("http_client_request_duration_seconds_count", "http_response_status_code") == (
        expected
    )
    assert labels("http_client_request_duration_seconds_count", "error_type") == {
        "", "599", metrics.OTHER_VALUE
    }  # fmt: skip


def test_messaging_destinations_are_capped_and_truncated() -> None:
    registry = CollectorRegistry()
    messaging = metrics.MessagingMetrics("svc", None, registry)
    for i in range(250):
        messaging.published("kafka", f"topic-{i}" + "x" * 300, 0.01, None)
    destinations = {
        s.labels["messaging_destination_name"]
        for f in registry.collect()
        for s in f.samples
        if s.name == "messaging_client_sent_messages_total"
    }
    assert len(destinations) == 201
    assert max(len(d) for d in destinations) == metrics.MAX_LABEL_LENGTH


def test_a_label_value_utf8_cannot_encode_does_not_fail_every_scrape() -> None:
    """A queue name read with surrogateescape (invalid UTF-8 in the environment or a file) holds
    a lone surrogate: once it was a label value, every scrape of the process failed."""
    registry = CollectorRegistry()
    undecodable = b"orders-\xff".decode("utf-8", "surrogateescape")
    for destination in ("payments", undecodable):
        with tracekit_messaging.consume(
            {}, system="rabbitmq", destination=destination, registry=registry
        ):
            pass
    client = metrics.HttpClientMetrics("svc", None, registry)
    client.request_finished(
        {"server.address": undecodable, "server.port": 443}, 200, None, 0.01, None
    )
    httpd, thread = metrics_server.serve(0, registry)
    try:
        port = httpd.server_address[1]
        for accept in (OPENMETRICS, "text/plain"):
            response = httpx.get(f"http://127.0.0.1:{port}/", headers={"Accept": accept})
            assert response.status_code == 200
            assert 'messaging_destination_name="payments"' in response.text
            assert 'messaging_destination_name="orders-?"' in response.text
            assert 'server_address="orders-?"' in response.text
    finally:
        metrics.MetricsServer(httpd, thread).close()


def test_a_destination_given_as_bytes_is_its_text_and_every_scrape_still_answers() -> None:
    """redis-py answers stream keys as bytes (without ``decode_responses``): a key handed on
    to ``consume`` as it came was stored as a label value, and every later scrape of the
    process failed with a TypeError."""
    registry = CollectorRegistry()
    destinations: list[Any] = ["payments", b"orders"]
    for destination in destinations:
        with tracekit_messaging.consume(
            {}, system="redis", destination=destination, registry=registry
        ):
            pass
    httpd, thread = metrics_server.serve(0, registry)
    try:
        response = httpx.get(f"http://127.0.0.1:{httpd.server_address[1]}/")
        assert response.status_code == 200
        assert 'messaging_destination_name="payments"' in response.text
        assert 'messaging_destination_name="orders"' in response.text
    finally:
        metrics.MetricsServer(httpd, thread).close()


def test_a_registry_holding_one_of_the_names_grows_nothing_per_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The host's registry has its own ``messaging_process_duration_seconds``: tracekit's
    messaging metrics cannot join it. Each message built them again, joining the families
    before the clashing one once more: a collector more per message in the registry, every
    scrape slower, without end. The messages go on, and the host's metric scrapes as before."""
    monkeypatch.setattr(guard, "_reported", set())  # warned once per process: this test's
    registry = CollectorRegistry()
    theirs = Histogram("messaging_process_duration_seconds", "the host's own", registry=registry)
    theirs.observe(0.5)
    for _ in range(50):
        headers: dict[str, str] = {}
        with tracekit_messaging.publish(
            headers, system="kafka", destination="t", registry=registry
        ):
            pass
        with tracekit_messaging.consume(
            headers, system="kafka", destination="t", registry=registry
        ):
            pass
    assert registry.get_sample_value("messaging_process_duration_seconds_count") == 1
    joined = families._families[registry]
    assert {name: len(family.members) for name, family in joined.items()} == {
        "messaging_client_operation_duration_seconds": 1,
        "messaging_client_sent_messages": 1,
    }


def test_install_serves_the_metrics_port_until_uninstall() -> None:
    port = free_port()
    server = metrics.install(config.resolve("svc", environ={}, metrics_port=port))
    assert server is not None
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/", headers={"Accept": OPENMETRICS})
        assert response.status_code == 200
        assert response.text.rstrip().endswith("# EOF")
    finally:
        server.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/")


def test_install_with_port_zero_or_correlation_mode_serves_nothing() -> None:
    assert metrics.install(config.resolve("svc", environ={}, metrics_port=0)) is None
    assert (
        metrics.install(
            config.resolve("svc", environ={}, metrics_port=free_port(), mode="correlation")
        )
        is None
    )


def test_taken_port_is_a_warning_not_a_crash_and_served_once_it_frees(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second process holds the port (the old worker of a gunicorn reload, which starts the
    new worker first): this one says so and carries on. It gave up for good, and once the holder
    had gone nobody served the metrics; it now takes the port over. The warning names the
    variable that moves a service to a port of its own (two services on one machine, both on
    the default port, were told only of the remedy for workers of one server)."""
    monkeypatch.setattr(metrics_server.Standby, "RETRY_S", 0.1)
    taken = socket.socket()
    taken.bind(("0.0.0.0", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with caplog.at_level(logging.WARNING, logger="tracekit"):
        server = metrics.install(config.resolve("svc", environ={}, metrics_port=port))
    assert server is not None
    try:
        assert f"metrics port {port} unavailable" in caplog.text
        assert "if another service holds it, give this one TRACEKIT_METRICS_PORT" in caplog.text
        taken.close()  # the holder goes
        answer = wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/", headers={"Accept": OPENMETRICS}), 5,
            "the port taken over", ignoring=(httpx.TransportError,),
        )  # fmt: skip
        assert answer.text.rstrip().endswith("# EOF")
    finally:
        taken.close()
        server.close()


def _client_destinations(registry: CollectorRegistry) -> set[tuple[str, str]]:
    return {
        (s.labels["server_address"], s.labels["server_port"])
        for f in registry.collect()
        for s in f.samples
        if s.name == "http_client_request_duration_seconds_count"
    }


@pytest.mark.parametrize(
    "destination",
    [lambda i: ("10.0.0.1", 1024 + i), lambda i: (f"h{i}.example", 443), lambda i: (f"h{i}", i)],
    ids=["ports of one host", "hosts", "both"],
)
def test_client_destinations_are_capped_for_ports_as_for_hosts(destination: Any) -> None:
    registry = CollectorRegistry()
    client = metrics.HttpClientMetrics("svc", None, registry)
    for i in range(2000):
        host, port = destination(i)
        attributes = {"http.request.method": "GET", "server.address": host, "server.port": port}
        client.request_finished(attributes, 200, None, 0.01, None)
    found = _client_destinations(registry)
    assert len(found) == metrics.MAX_CLIENT_DESTINATIONS + 1
    assert (metrics.OTHER_VALUE, metrics.OTHER_VALUE) in found
    assert (destination(0)[0], str(destination(0)[1])) in found  # the first ones keep their names


def test_idle_connections_to_the_metrics_port_hold_no_thread_for_long(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The metrics port binds every interface. Each connection that sent nothing held a thread
    of the application for ever (prometheus-client's server has no timeout and no limit): 60
    idle connections were 60 more threads. Now at most a few are served at once, a silent one
    is dropped after the timeout without a traceback on stderr, and the next scrape is
    answered."""
    monkeypatch.setattr(metrics_server._Handler, "timeout", 0.5)
    port = free_port()
    server = metrics.install(config.resolve("svc", environ={}, metrics_port=port))
    assert server is not None
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(60)]
    try:
        time.sleep(0.2)  # every connection accepted by now
        assert threading.active_count() - before <= metrics_server.MAX_CONNECTIONS
        wait_for(lambda: threading.active_count() == before, 5, "idle connections dropped")
        response = httpx.get(f"http://127.0.0.1:{port}/", headers={"Accept": OPENMETRICS})
        assert response.status_code == 200 and response.text.rstrip().endswith("# EOF")
    finally:
        for connection in idle:
            connection.close()
        server.close()
    assert "Traceback" not in capfd.readouterr().err


def test_clients_sending_their_request_a_byte_at_a_time_do_not_shut_scrapes_out(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The timeout bounded each read, not the request: a client sending a byte a little more
    often than the timeout held its slot for as long as it liked, and as many such clients as
    there are slots shut every scrape out (each was closed unanswered). Now a connection has
    the timeout as a whole to send its request and take its answer."""
    monkeypatch.setattr(metrics_server._Handler, "timeout", 0.5)
    port = free_port()
    server = metrics.install(config.resolve("svc", environ={}, metrics_port=port))
    assert server is not None
    slow = [
        socket.create_connection(("127.0.0.1", port)) for _ in range(metrics_server.MAX_CONNECTIONS)
    ]
    stop = threading.Event()

    def drip() -> None:
        while not stop.wait(0.2):
            for connection in slow:
                with contextlib.suppress(OSError):
                    connection.send(b"G")

    dripping = threading.Thread(target=drip, daemon=True)
    dripping.start()
    try:
        time.sleep(1.0)  # twice the timeout, every slow client still sending
        response = httpx.get(f"http://127.0.0.1:{port}/", headers={"Accept": OPENMETRICS})
        assert response.status_code == 200 and response.text.rstrip().endswith("# EOF")
    finally:
        stop.set()
        dripping.join()
        for connection in slow:
            connection.close()
        server.close()
    assert "Traceback" not in capfd.readouterr().err


def test_peers_holding_every_slot_open_do_not_shut_a_scrape_out(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Anything that reaches the port could open as many connections as there are slots, send
    nothing, and open them again as each was dropped after the timeout: every scrape in
    between was closed unanswered (0 of 47 sidecar scrapes in the metrics review). A scrape
    now takes the slot of the oldest connection that has not sent its request, at once; the
    timeout is left at its default, so no slot frees by itself during the test."""
    port = free_port()
    server = metrics.install(config.resolve("svc", environ={}, metrics_port=port))
    assert server is not None
    held = [
        socket.create_connection(("127.0.0.1", port)) for _ in range(metrics_server.MAX_CONNECTIONS)
    ]
    try:
        time.sleep(0.3)  # every connection accepted and holding its slot by now
        for _ in range(3):
            response = httpx.get(
                f"http://127.0.0.1:{port}/", headers={"Accept": OPENMETRICS}, timeout=5
            )
            assert response.status_code == 200 and response.text.rstrip().endswith("# EOF")
    finally:
        for connection in held:
            connection.close()
        server.close()
    assert "Traceback" not in capfd.readouterr().err


def test_in_multiprocess_mode_a_worker_takes_the_port_over_when_it_frees(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """In multiprocess mode the first worker serves the port; the others found it taken and
    gave up for good. gunicorn's HUP reload starts the new workers while the old ones hold the
    port, then stops the old ones: after every reload nobody served the metrics, and nothing
    said so. A worker that found the port taken now takes it over once it is free."""
    monkeypatch.setenv(metrics.MULTIPROC_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(metrics_server.Standby, "RETRY_S", 0.1)
    sibling = socket.socket()  # the worker serving the port now
    sibling.bind(("0.0.0.0", 0))
    sibling.listen()
    port = sibling.getsockname()[1]
    server = metrics.install(config.resolve("svc", environ={}, metrics_port=port))
    assert server is not None
    try:
        time.sleep(0.3)
        sibling.close()  # that worker exits
        answer = wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/metrics"), 5, "the port taken over",
            ignoring=(httpx.TransportError,),
        )  # fmt: skip
        assert answer.status_code == 200
    finally:
        sibling.close()
        server.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/")


def test_in_multiprocess_mode_an_address_that_can_never_be_bound_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a port another worker holds frees later. Every worker stood by, retrying for ever,
    when the bind could never succeed (an address not of this host, a port below 1024), and
    said so only at DEBUG: no metrics, and no word why."""
    monkeypatch.setenv(metrics.MULTIPROC_DIR_ENV, str(tmp_path))
    port = free_port()
    options = config.resolve("svc", environ={}, metrics_port=port, metrics_host="192.0.2.1")
    with caplog.at_level(logging.WARNING, logger="tracekit"):  # 192.0.2.1: TEST-NET-1
        server = metrics.install(options)
    assert server is None
    assert f"metrics port {port} unavailable" in caplog.text


def test_a_standby_worker_stops_waiting_at_shutdown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(metrics.MULTIPROC_DIR_ENV, str(tmp_path))
    with socket.socket() as sibling:
        sibling.bind(("0.0.0.0", 0))
        sibling.listen()
        port = sibling.getsockname()[1]
        server = metrics.install(config.resolve("svc", environ={}, metrics_port=port))
        assert server is not None
        server.close(timeout_s=1)
        assert not server.thread.is_alive()


IN_FLIGHT_WORKER = """
import sys, time
from tracekit.metrics import HttpServerMetrics

HttpServerMetrics.get("svc").request_started()  # a request in flight
print("started", flush=True)
time.sleep(60)
"""


def _in_flight() -> float:
    text = generate_latest(metrics.exposition_registry()).decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "http_server_active_requests"
    )


def test_in_multiprocess_mode_a_killed_worker_s_requests_leave_the_in_flight_gauge(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A worker killed with a request in flight (OOM, a supervisor's SIGKILL) left its live
    gauge file behind: only gunicorn's child_exit hook calls mark_process_dead, uvicorn
    ``--workers`` has none, and the in-flight gauge kept that request for ever."""
    monkeypatch.setenv(metrics.MULTIPROC_DIR_ENV, str(tmp_path))
    env = {**os.environ, metrics.MULTIPROC_DIR_ENV: str(tmp_path)}
    worker = subprocess.Popen(
        [sys.executable, "-c", IN_FLIGHT_WORKER], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline() == "started\n"
        assert _in_flight() == 1.0
    finally:
        worker.kill()
        worker.wait()
    assert _in_flight() == 0.0
