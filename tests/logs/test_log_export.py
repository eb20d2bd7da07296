"""Logs emitted inside a real request: the JSON stdout line and the exported OTLP record agree.

The service runs in a subprocess (it calls ``tracekit.init()``, which installs a global provider)
under uvicorn. OTLP export is checked twice: into the embedded store (``TRACEKIT_EXPORTER=store``)
and on the wire, against a loopback HTTP server that decodes the OTLP/HTTP protobuf the SDK's
exporter sends — no otel collector binary is available here, so that server stands in for it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from loopback import free_port, serve_in_thread, wait_for_port
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store

APP = Path(__file__).parent / "apps" / "log_service.py"


def _run_service(exporter: str, store: Path, env: dict[str, str]) -> tuple[str, str]:
    """Start the service, send one correlated request, stop it; return (stdout, trace id)."""
    port = free_port()
    env = {**os.environ, **env, "OTEL_BLRP_SCHEDULE_DELAY": "100", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    process = subprocess.Popen(
        [sys.executable, str(APP), str(port), exporter, str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_for_port(port, process, timeout=20)
        response = httpx.get(
            f"http://127.0.0.1:{port}/orders/7", headers={"X-Correlation-ID": "checkout-77"}
        )
        assert response.status_code == 200
        assert response.headers["x-correlation-id"] == "checkout-77"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    return stdout, stderr


def _charge_line(stdout: str) -> dict[str, object]:
    for line in stdout.splitlines():
        document: dict[str, object] = json.loads(line)
        if document.get("message") == "charging order 7":
            return document
    raise AssertionError(f"no JSON line for the request in {stdout!r}")


def test_request_logs_reach_stdout_json_and_the_store(tmp_path: Path) -> None:
    store_path = tmp_path / "tracekit.db"
    stdout, _ = _run_service("store", store_path, {})
    line = _charge_line(stdout)
    assert line["correlation_id"] == "checkout-77"
    assert line["service"] == "logsvc"
    assert line["amount"] == 12.5
    trace_id = str(line["trace_id"])

    with Store(store_path) as store:
        exported = store.logs_by_trace_ids([trace_id])
        server_spans = [s for s in store.spans_by_trace_ids([trace_id]) if s.kind == "SERVER"]
    charge = next(r for r in exported if r.body == "charging order 7")
    assert charge.correlation_id == "checkout-77"  # the correlation.id attribute
    assert charge.span_id == line["span_id"] == server_spans[0].span_id
    assert charge.service == "logsvc"
    assert charge.severity_text == "INFO"


def test_exported_records_carry_the_correlation_id_without_stamping(tmp_path: Path) -> None:
    """``logs=False`` leaves the host's records unstamped; the exported ones still carry
    ``correlation.id``, so ``tracekit trace ID`` still finds the request's log lines."""
    store_path = tmp_path / "tracekit.db"
    stdout, _ = _run_service("store", store_path, {"TRACEKIT_LOGS": "false"})
    assert "correlation_id" not in _charge_line(stdout)  # not stamped: nothing to print

    with Store(store_path) as store:
        exported = store.logs_by_correlation_id("checkout-77")
    assert [(r.body, r.correlation_id) for r in exported] == [("charging order 7", "checkout-77")]


class _OtlpSink(BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP protobuf posts and keeps the decoded log requests."""

    received: ClassVar[list[ExportLogsServiceRequest]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/logs":
            request = ExportLogsServiceRequest()
            request.ParseFromString(body)
            self.received.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def otlp_sink() -> Iterator[tuple[str, list[ExportLogsServiceRequest]]]:
    _OtlpSink.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtlpSink)
    stop = serve_in_thread(server)
    yield f"http://127.0.0.1:{server.server_address[1]}", _OtlpSink.received
    stop()


def test_request_logs_are_exported_over_otlp_http(
    tmp_path: Path, otlp_sink: tuple[str, list[ExportLogsServiceRequest]]
) -> None:
    endpoint, received = otlp_sink
    stdout, _ = _run_service(
        "otlp", tmp_path / "unused.db", {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    )
    line = _charge_line(stdout)
    records = [
        (resource_logs.resource, record)
        for request in received
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
        for record in scope_logs.log_records
        if record.body.string_value == "charging order 7"
    ]
    assert len(records) == 1
    resource, record = records[0]
    attributes = {a.key: a.value for a in record.attributes}
    assert attributes["correlation.id"].string_value == "checkout-77"
    assert record.trace_id.hex() == line["trace_id"]
    assert record.span_id.hex() == line["span_id"]
    assert record.severity_text == "INFO"
    service = {a.key: a.value.string_value for a in resource.attributes}["service.name"]
    assert service == "logsvc"


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[tuple[Receiver, Path]]:
    """What ``tracekit collector`` runs: a real OTLP receiver on loopback, into its own store."""
    path = tmp_path / "collector.db"
    receiver = Receiver(Store(path), ReceiverConfig(port=0)).start()
    yield receiver, path
    receiver.stop()


# The application's own LoggerProvider, exporting over OTLP/HTTP, for a LogExportHandler it
# places itself (behind a QueueListener, ``records``).
OWN_PROVIDER = """
import logging, logging.handlers, queue, tracekit
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from tracekit.logs import LogExportHandler
provider = LoggerProvider()
provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
records = queue.Queue()
"""
# ... with tracekit stamping records and a LogExportHandler behind a running QueueListener.
QUEUED = (
    OWN_PROVIDER
    + """
tracekit.init("shop", metrics_port=0, export_logs=False)
listener = logging.handlers.QueueListener(records, LogExportHandler(provider))
logging.root.addHandler(logging.handlers.QueueHandler(records))
listener.start()
"""
)


def _run_app(code: str, endpoint: str, preamble: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``preamble`` then ``code`` in a fresh interpreter exporting over OTLP/HTTP to
    ``endpoint``."""
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    env.pop("TRACEKIT_EXPORTER", None)
    command = [sys.executable, "-c", preamble + textwrap.dedent(code)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


def test_text_utf8_cannot_hold_loses_neither_its_record_nor_the_batch(
    collector: tuple[Receiver, Path],
) -> None:
    """A lone surrogate (JSON's ``"\\ud800"`` in a request body, a name decoded with
    ``surrogateescape``) in one record's message failed the encoding of the whole batch: every
    record batched with it was lost, and tracekit warned that the collector was unreachable."""
    receiver, path = collector
    result = _run_app(
        """
        import json, logging, tracekit
        tracekit.init("shop", metrics_port=0)
        log = logging.getLogger("shop")
        tracekit.correlation.set_correlation_id("order-9")
        name = json.loads('"\\\\ud800x"')
        log.warning("before")
        log.warning("hello %s", name)
        log.warning("extra", extra={"customer": name, name: 1})
        try:
            raise ValueError(name)
        except ValueError:
            log.exception("failed")
        logging.getLogger(f"shop.{name}").warning("scoped")
        log.warning("after")
        tracekit.shutdown()
        """,
        receiver.endpoint,
    )
    receiver.stop()
    assert "Failed to encode" not in result.stderr
    assert "could not export" not in result.stderr
    with Store(path) as store:
        records = store.logs_by_correlation_id("order-9")
    assert [r.body for r in records] == [
        "before",
        "hello \ufffdx",
        "extra",
        "failed",
        "scoped",
        "after",
    ]
    extra, failed = records[2].attributes, records[3].attributes
    assert extra["customer"] == "\ufffdx" and extra["\ufffdx"] == 1
    assert failed["exception.message"] == "\ufffdx"
    assert str(failed["exception.stacktrace"]).endswith("ValueError: \ufffdx\n")


def test_a_burst_of_records_at_their_bounds_loses_no_record_of_the_batch(
    collector: tuple[Receiver, Path],
) -> None:
    """Each record is bounded (a 16 KiB message, a 16 KiB traceback, 32 fields of 1 KiB), but
    the SDK batches up to 512 records whatever their size: a burst of large ones (every request
    logging a hostile value with its exception) made one export request larger than a collector
    takes (16 MiB here): it was refused whole (413), every record batched with it was lost, and
    tracekit warned that the collector was unreachable."""
    receiver, path = collector
    result = _run_app(
        """
        import logging, tracekit
        tracekit.init("shop", metrics_port=0)
        log = logging.getLogger("shop")
        tracekit.correlation.set_correlation_id("order-9")
        value = "x" * 20_000
        fields = {f"field{n}": value for n in range(32)}
        log.warning("before")
        for _ in range(300):
            try:
                raise ValueError(value)
            except ValueError:
                log.exception("refused %s", value, extra=fields)
        log.warning("after")
        tracekit.shutdown()
        """,
        receiver.endpoint,
    )
    receiver.stop()
    assert "could not export" not in result.stderr
    with Store(path) as store:
        bodies = [r.body for r in store.logs_by_correlation_id("order-9")]
    assert len(bodies) == 302
    assert bodies[0] == "before" and bodies[-1] == "after"


def test_a_record_exported_behind_a_queue_listener_keeps_its_span(
    collector: tuple[Receiver, Path],
) -> None:
    """The stdlib's ``QueueHandler``/``QueueListener`` recipe with ``LogExportHandler`` on the
    listener: the handler exported in the listener's thread, where no span is current, so the
    record arrived without the trace and span it was logged in (only its correlation ID)."""
    receiver, path = collector
    _run_app(
        """
        tracekit.correlation.set_correlation_id("order-5")
        with trace.get_tracer("shop").start_as_current_span("charge"):
            logging.getLogger("shop").warning("inside")
        logging.getLogger("shop").warning("outside")
        listener.stop()
        provider.shutdown()
        tracekit.shutdown()
        """,
        receiver.endpoint,
        QUEUED,
    )
    receiver.stop()
    with Store(path) as store:
        (charge,) = store.spans_by_correlation_id("order-5")
        records = {r.body: r for r in store.logs_by_correlation_id("order-5")}
    assert (records["inside"].trace_id, records["inside"].span_id) == (
        charge.trace_id,
        charge.span_id,
    )
    assert (records["outside"].trace_id, records["outside"].span_id) == (None, None)


def test_ids_given_with_extra_do_not_move_a_queued_record_to_another_trace(
    collector: tuple[Receiver, Path],
) -> None:
    """``extra={"trace_id": ...}`` (a partner's trace ID, or one a client sent in a header) on
    a record that a ``QueueHandler`` copies: the ``LogExportHandler`` behind the listener read
    the copy's ``trace_id``/``span_id``, so the record left the span it was logged in for the
    trace those values named (mixed with the real span ID where only one was given), and lost
    the values as attributes; exported in the logging call it kept both."""
    receiver, path = collector
    _run_app(
        """
        log = logging.getLogger("shop")
        tracekit.correlation.set_correlation_id("order-6")
        with trace.get_tracer("shop").start_as_current_span("charge"):
            log.warning("partner", extra={"trace_id": "ab" * 16})
            log.warning("both", extra={"trace_id": "cd" * 16, "span_id": "ef" * 8})
        log.warning("outside", extra={"trace_id": "12" * 16, "span_id": "34" * 8})
        listener.stop()
        provider.shutdown()
        tracekit.shutdown()
        """,
        receiver.endpoint,
        QUEUED,
    )
    receiver.stop()
    with Store(path) as store:
        (charge,) = store.spans_by_correlation_id("order-6")
        records = {r.body: r for r in store.logs_by_correlation_id("order-6")}
    for body in ("partner", "both"):
        assert (records[body].trace_id, records[body].span_id) == (charge.trace_id, charge.span_id)
    assert (records["outside"].trace_id, records["outside"].span_id) == (None, None)
    assert records["partner"].attributes["trace_id"] == "ab" * 16
    assert records["both"].attributes["span_id"] == "ef" * 8
    assert records["outside"].attributes["trace_id"] == "12" * 16


def test_a_record_exported_in_a_listener_span_keeps_the_span_it_was_logged_in(
    collector: tuple[Receiver, Path],
) -> None:
    """A listener that traces its own work (each record handed on inside a ``ship`` span): the
    ``LogExportHandler`` exported the record in that span, so the request's log line showed in
    the shipping trace instead of the request's."""
    receiver, path = collector
    _run_app(
        """
        tracekit.init("shop", metrics_port=0, export_logs=False)
        tracer = trace.get_tracer("shop")

        class ShippingListener(logging.handlers.QueueListener):
            def handle(self, record):
                with tracer.start_as_current_span("ship"):
                    super().handle(record)

        listener = ShippingListener(records, LogExportHandler(provider))
        logging.root.addHandler(logging.handlers.QueueHandler(records))
        listener.start()
        tracekit.correlation.set_correlation_id("order-7")
        with tracer.start_as_current_span("charge"):
            logging.getLogger("shop").warning("inside")
        listener.stop()
        provider.shutdown()
        tracekit.shutdown()
        """,
        receiver.endpoint,
        OWN_PROVIDER,
    )
    receiver.stop()
    with Store(path) as store:
        (charge,) = store.spans_by_correlation_id("order-7")
        (record,) = store.logs_by_correlation_id("order-7")
    assert (record.trace_id, record.span_id) == (charge.trace_id, charge.span_id)


def test_ids_given_with_extra_are_no_trace_context_without_stamping(
    collector: tuple[Receiver, Path],
) -> None:
    """With ``logs=False`` nothing is stamped, so a record's ``trace_id``/``span_id`` can only
    be the application's ``extra=`` values: exported outside spans, the record was put in the
    trace they named."""
    receiver, path = collector
    _run_app(
        """
        tracekit.init("shop", metrics_port=0, logs=False, export_logs=False)
        logging.root.addHandler(LogExportHandler(provider))
        tracekit.correlation.set_correlation_id("order-8")
        partner = {"trace_id": "ab" * 16, "span_id": "cd" * 8}
        logging.getLogger("shop").warning("partner", extra=partner)
        provider.shutdown()
        tracekit.shutdown()
        """,
        receiver.endpoint,
        OWN_PROVIDER,
    )
    receiver.stop()
    with Store(path) as store:
        (record,) = store.logs_by_correlation_id("order-8")
    assert (record.trace_id, record.span_id) == (None, None)
