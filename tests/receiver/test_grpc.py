"""OTLP/gRPC: the OpenTelemetry Python SDK's gRPC exporters, and raw calls for what they never send.

Every answer is the one the HTTP side gives, in gRPC terms: partial success, INVALID_ARGUMENT for
a malformed message, RESOURCE_EXHAUSTED for one over the size limit, UNAVAILABLE when the memory
budget is spent.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import itertools
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conditions import wait_for
from google.rpc import code_pb2, status_pb2
from google.rpc.error_details_pb2 import RetryInfo
from loopback import free_port
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.receiver._collector_process import ENTRY, start_collector
from tests.receiver.conftest import post
from tests.receiver.test_hostile_clients import PartialGrpcCalls, _h2_frame, _h2_literal

from tracekit.receiver import Receiver, ReceiverConfig, _grpc
from tracekit.store import Store

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MIB = 1024 * 1024


@pytest.fixture
def grpc_receiver(store_path: Path) -> Iterator[Receiver]:
    """A receiver with gRPC on a free port (4 MiB messages, 6 MiB of bodies in memory)."""
    config = ReceiverConfig(port=0, grpc_port=0, max_body_bytes=4 * MIB, max_memory_bytes=6 * MIB)
    receiver = Receiver(Store(store_path), config).start()
    yield receiver
    receiver.stop()


def _target(receiver: Receiver) -> str:
    assert receiver.grpc_address is not None
    host, port = receiver.grpc_address
    return f"{host}:{port}"


def _finished_spans(count: int) -> list[object]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "grpc-python"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("grpc-test")
    for n in range(count // 2):
        with tracer.start_as_current_span("GET /orders/{id}", attributes={"n": n}):
            tracer.start_span("SELECT orders").end()
    return list(memory.get_finished_spans())


@pytest.mark.parametrize("compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip])
def test_sdk_grpc_span_exporter_acknowledged_equals_stored(
    compression: grpc.Compression, grpc_receiver: Receiver, store_path: Path
) -> None:
    exporter = OTLPSpanExporter(
        endpoint=_target(grpc_receiver), insecure=True, compression=compression
    )
    spans = _finished_spans(600)
    acknowledged = 0
    for start in range(0, len(spans), 100):
        if exporter.export(spans[start : start + 100]) == SpanExportResult.SUCCESS:  # type: ignore[arg-type]
            acknowledged += 100
    exporter.shutdown()
    with Store(store_path) as reader:
        stored = reader.spans_since(0)
    assert acknowledged == len(stored) == 600
    by_id = {s.span_id: s for s in stored}
    children = [s for s in stored if s.name == "SELECT orders"]
    assert all(by_id[c.parent_span_id or ""].name == "GET /orders/{id}" for c in children)


def test_sdk_grpc_log_exporter(grpc_receiver: Receiver, store_path: Path) -> None:
    provider = LoggerProvider(resource=Resource.create({"service.name": "grpc-logs"}))
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=_target(grpc_receiver), insecure=True))
    )
    logger = logging.getLogger("tests.grpc.logs")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(LoggingHandler(logger_provider=provider))
    with TracerProvider().get_tracer("t").start_as_current_span("handler") as span:
        logger.warning("stock low for %s", "sku-1")
    provider.shutdown()
    trace_id = format(span.get_span_context().trace_id, "032x")
    with Store(store_path) as reader:
        (record,) = reader.logs_by_trace_ids([trace_id])
    assert record.body == "stock low for sku-1" and record.service == "grpc-logs"


def _call(receiver: Receiver, body: bytes, compression: grpc.Compression | None = None) -> bytes:
    with grpc.insecure_channel(_target(receiver)) as channel:
        export = channel.unary_unary(TRACES)
        return export(body, timeout=30, compression=compression)  # type: ignore[no-any-return]


def _spans(times: list[tuple[int, int]], name: str = "op") -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for n, (start, end) in enumerate(times):
        span = scope.spans.add(name=name, start_time_unix_nano=start, end_time_unix_nano=end)
        span.trace_id, span.span_id = b"\x07" * 16, (n + 1).to_bytes(8, "big")
    return request.SerializeToString()


def test_partial_success_over_grpc(grpc_receiver: Receiver, store_path: Path) -> None:
    now = time.time_ns()
    answer = _call(grpc_receiver, _spans([(now, now), (2**64 - 1, 2**64 - 1), (1, now)]))
    partial = ExportTraceServiceResponse.FromString(answer).partial_success
    assert partial.rejected_spans == 2 and "before 2000" in partial.error_message
    with Store(store_path) as reader:
        assert reader.count_spans() == 1


def _code(receiver: Receiver, body: bytes, compression: grpc.Compression | None = None) -> object:
    with pytest.raises(grpc.RpcError) as raised:
        _call(receiver, body, compression)
    return raised.value.code()  # type: ignore[attr-defined]


def test_malformed_message_is_invalid_argument(grpc_receiver: Receiver) -> None:
    assert _code(grpc_receiver, b"\xff\xff\xff not protobuf") == grpc.StatusCode.INVALID_ARGUMENT


def test_oversized_message_is_resource_exhausted(grpc_receiver: Receiver) -> None:
    now = time.time_ns()
    big = _spans([(now, now)], name="x" * (5 * MIB))
    assert _code(grpc_receiver, big) == grpc.StatusCode.RESOURCE_EXHAUSTED
    # small on the wire, too large once decompressed
    assert len(gzip.compress(big)) < 100_000
    assert _code(grpc_receiver, big, grpc.Compression.Gzip) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_spent_memory_budget_is_unavailable(grpc_receiver: Receiver) -> None:
    now = time.time_ns()
    grpc_receiver.budget.take(4 * MIB)  # as if requests held 4 of the 6 MiB
    try:
        body = _spans([(now, now)], name="x" * (3 * MIB))
        assert _code(grpc_receiver, body) == grpc.StatusCode.UNAVAILABLE
    finally:
        grpc_receiver.budget.give(4 * MIB)
    assert _call(grpc_receiver, body) is not None  # with room again, the same request is stored


def test_unavailable_carries_retry_info_as_exporters_read_it(grpc_receiver: Receiver) -> None:
    """The OpenTelemetry Python exporter reads ``google.rpc.retryinfo-bin``; Go's and Java's (and
    the Collector's) read RetryInfo among the details of ``grpc-status-details-bin``."""
    now = time.time_ns()
    grpc_receiver.budget.take(4 * MIB)
    try:
        with pytest.raises(grpc.RpcError) as refused:
            _call(grpc_receiver, _spans([(now, now)], name="x" * (3 * MIB)))
    finally:
        grpc_receiver.budget.give(4 * MIB)
    trailers = dict(refused.value.trailing_metadata())  # type: ignore[attr-defined]
    assert RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]).retry_delay.seconds == 1
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == code_pb2.UNAVAILABLE and "memory" in status.message
    (detail,) = status.details
    retry = RetryInfo()
    assert detail.Unpack(retry) and retry.retry_delay.seconds == 1


def test_metrics_are_accepted_and_dropped_with_one_log_line(
    grpc_receiver: Receiver, store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("m").create_counter("orders").add(3)
    data = reader.get_metrics_data()
    exporter = OTLPMetricExporter(endpoint=_target(grpc_receiver), insecure=True)
    with caplog.at_level(logging.WARNING, logger="tracekit.receiver"):
        for _ in range(3):
            assert exporter.export(data).name == "SUCCESS"  # type: ignore[arg-type]
        empty = b""  # an ExportMetricsServiceRequest with nothing in it, over HTTP
        assert post(grpc_receiver, "/v1/metrics", empty).status == 200
    exporter.shutdown()
    dropped = [r for r in caplog.records if "metrics received and dropped" in r.getMessage()]
    assert len(dropped) == 1
    with Store(store_path) as store:
        assert store.count_spans() == 0 and store.count_logs() == 0


def test_collector_line_names_both_endpoints(tmp_path: Path) -> None:
    port = free_port()
    process, http_port = start_collector(tmp_path / "g.db", "--grpc-port", str(port))
    try:
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
        assert exporter.export(_finished_spans(2)) == SpanExportResult.SUCCESS  # type: ignore[arg-type]
        exporter.shutdown()
    finally:
        process.terminate()
        assert process.wait(60) == 0
    assert Store(tmp_path / "g.db").count_spans() == 2
    assert http_port != port


def test_grpc_port_taken_is_exit_2_when_asked_for(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*ENTRY, "--port", "0", "--grpc-port", str(port), "--store", str(tmp_path / "t.db")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    # the system's reason, as for the HTTP port; grpc's own text said only "Failed to bind to
    # address ...; set GRPC_VERBOSITY=debug environment variable to see detailed error message"
    assert result.stderr == (
        f"tracekit collector: cannot listen on 127.0.0.1:{port}: Address already in use"
        " (--grpc-port PORT for another port, --grpc-port 0 for none)\n"
    )


def _first_line_and_stderr(argv: list[str]) -> tuple[str, str]:
    """Start the collector ``argv``, read the first line it prints, stop it with SIGTERM (it
    exits 0): that line, and all it wrote on stderr."""
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    line = process.stdout.readline()
    process.terminate()
    assert process.wait(60) == 0
    return line, process.stderr.read()


def test_default_grpc_port_taken_leaves_http_running(tmp_path: Path) -> None:
    """4317 held by someone else: one line on stderr, OTLP/HTTP serves on."""
    holder = _hold_default_grpc_port()
    try:
        line, warning = _first_line_and_stderr([*ENTRY, "--port", "0", "--store",
                                                str(tmp_path / "d.db")])  # fmt: skip
    finally:
        holder.close()
    assert "(OTLP/HTTP)" in line and "OTLP/gRPC" not in line
    assert warning.count("\n") == 1 and "OTLP/gRPC not started" in warning
    assert warning == (
        "tracekit collector: OTLP/gRPC not started: cannot listen on 127.0.0.1:4317: Address"
        " already in use; serving OTLP/HTTP only (--grpc-port PORT for another port,"
        " --grpc-port 0 for none)\n"
    )


def test_a_receiver_stopped_twice_stops_quietly(store_path: Path) -> None:
    """As with OTLP/HTTP alone: the second stop of a receiver serving gRPC raised 'Event loop
    is closed'."""
    receiver = Receiver(Store(store_path), ReceiverConfig(port=0, grpc_port=0)).start()
    receiver.stop()
    receiver.stop()
    assert receiver.grpc is not None and receiver.grpc._loop.is_closed()


def _hold_default_grpc_port() -> socket.socket:
    """A listening socket on 4317, or an unbound one when another process keeps holding it
    (an OpenTelemetry Collector on this machine: just as good). Another suite's run of this
    test holds it for a moment only: waiting it out keeps the port from coming free between
    this check and the collector's bind."""
    deadline = time.monotonic() + 10
    while True:
        holder = socket.socket()
        try:
            holder.bind(("127.0.0.1", 4317))
            holder.listen()
            return holder
        except OSError:
            holder.close()
            if time.monotonic() > deadline:
                return socket.socket()
            time.sleep(0.1)


def test_importing_tracekit_does_not_import_grpc() -> None:
    code = "import sys, tracekit, tracekit.asgi, tracekit.wsgi; print('grpc' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.parametrize("host", ["::1", "::"])
def test_an_ipv6_host_serves_otlp_http_and_grpc(host: str, tmp_path: Path) -> None:
    """``--host ::1`` (or ``::``, every address of a dual-stack host) failed with "Address family
    for hostname not supported": the HTTP socket was always IPv4."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    grpc_port = free_port()
    process = subprocess.Popen(
        [*ENTRY, "--host", host, "--port", "0", "--grpc-port", str(grpc_port),
         "--store", str(tmp_path / "v6.db")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline()
        assert f"listening on http://[{host}]:" in line, process.stderr.read()
        assert f"and [{host}]:{grpc_port} (OTLP/gRPC)" in line
        port = int(line.split(f"http://[{host}]:")[1].split()[0])
        sent = HTTPSpanExporter(endpoint=f"http://[::1]:{port}/v1/traces")
        assert sent.export(_finished_spans(2)) == SpanExportResult.SUCCESS  # type: ignore[arg-type]
        sent.shutdown()
        exporter = OTLPSpanExporter(endpoint=f"[::1]:{grpc_port}", insecure=True)
        assert exporter.export(_finished_spans(4)) == SpanExportResult.SUCCESS  # type: ignore[arg-type]
        exporter.shutdown()
    finally:
        process.terminate()
        assert process.wait(60) == 0
    assert Store(tmp_path / "v6.db").count_spans() == 6


def test_an_ipv6_port_taken_names_the_address_in_brackets(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET6) as taken:
        taken.bind(("::1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*ENTRY, "--host", "::1", "--port", str(port), "--grpc-port", "0",
             "--store", str(tmp_path / "t.db")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        f"tracekit collector: cannot listen on [::1]:{port}: Address already in use"
        " (another collector? --port PORT for another port)\n"
    )


def test_calls_that_never_send_their_message_do_not_starve_an_exporter(store_path: Path) -> None:
    # 1 MiB messages: 160 calls may be receiving at once, so the 40 below all wait for theirs
    config = ReceiverConfig(port=0, grpc_port=0, request_timeout=2.0, max_body_bytes=MIB)
    receiver = Receiver(Store(store_path), config).start()
    held = threading.Event()

    def never_sends() -> Iterator[bytes]:
        held.wait()
        yield from ()

    channels = [grpc.insecure_channel(_target(receiver)) for _ in range(4)]
    try:
        stalled = [
            channel.stream_unary(TRACES).future(never_sends())
            for channel in channels
            for _ in range(10)
        ]  # more calls than the receiver has workers
        time.sleep(0.5)
        exporter = OTLPSpanExporter(endpoint=_target(receiver), insecure=True, timeout=5)
        assert exporter.export(_finished_spans(2)) == SpanExportResult.SUCCESS  # type: ignore[arg-type]
        exporter.shutdown()
        # and a stalled call ends at the request deadline, not when its client gives up
        assert stalled[0].exception(10).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        held.set()
        for channel in channels:
            channel.close()
        receiver.stop()
    with Store(store_path) as reader:
        assert reader.count_spans() == 2


def test_an_export_in_flight_at_stop_is_stored_and_acknowledged(store_path: Path) -> None:
    receiver = Receiver(Store(store_path), ReceiverConfig(port=0, grpc_port=0)).start()
    now = time.time_ns()
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for n in range(20_000):  # new strings: slow to decode
        span = scope.spans.add(name=f"op-{n}", start_time_unix_nano=now, end_time_unix_nano=now)
        span.trace_id, span.span_id = b"\x07" * 16, (n + 1).to_bytes(8, "big")
    outcome: list[object] = []

    def export() -> None:
        try:
            outcome.append(_call(receiver, request.SerializeToString()))
        except grpc.RpcError as error:
            outcome.append(error.code())  # type: ignore[attr-defined]

    sender = threading.Thread(target=export)
    sender.start()
    wait_for(lambda: receiver.budget.used > 0)  # its message has arrived whole
    receiver.stop()
    sender.join(30)
    assert outcome == [b""]  # an empty ExportTraceServiceResponse: every span accepted
    with Store(store_path) as reader:
        assert reader.count_spans() == 20_000


def test_calls_past_the_cap_are_told_unavailable_which_exporters_retry(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """grpc's own cap answered RESOURCE_EXHAUSTED without RetryInfo, which the OTLP
    specification tells exporters not to retry (the Go SDK and the Collector drop the batch).
    (No call here is old enough to be displaced by the newcomer, however slow the machine.)"""
    monkeypatch.setattr(_grpc, "MIN_AGE", 60.0)
    config = ReceiverConfig(port=0, grpc_port=0, request_timeout=3.0, max_grpc_calls=4)
    receiver = Receiver(Store(store_path), config).start()
    held = threading.Event()

    def never_sends() -> Iterator[bytes]:
        held.wait()
        yield from ()

    # each stalled call on its own connection: no client crowds the others out (see below)
    channels = [_own_connection(receiver) for _ in range(5)]
    channel = channels[4]
    try:
        stalled = [stalling.stream_unary(TRACES).future(never_sends()) for stalling in channels[:4]]
        time.sleep(0.5)
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary(TRACES)(b"", timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        trailers = dict(refused.value.trailing_metadata())  # type: ignore[attr-defined]
        assert RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]).retry_delay.seconds == 1
        # once the stalled calls end (at the request deadline), a retry gets in
        for call in stalled:
            assert call.exception(10).code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert channel.unary_unary(TRACES)(b"", timeout=5) == b""
    finally:
        held.set()
        for open_channel in channels:
            open_channel.close()
        receiver.stop()


def _own_connection(receiver: Receiver) -> grpc.Channel:
    """A channel on a connection of its own (grpc shares one between channels to a target)."""
    return grpc.insecure_channel(_target(receiver), options=[("grpc.use_local_subchannel_pool", 1)])


def test_a_connection_crowding_the_receiving_calls_makes_room_at_once(store_path: Path) -> None:
    """At most the memory budget's worth of messages of the size limit is received at once (2
    here). A newcomer displaces the oldest call of the connection holding the most of them, young
    or not: one client renewing its stalled calls faster than every second kept every other
    client's calls refused, UNAVAILABLE after UNAVAILABLE."""
    config = ReceiverConfig(port=0, grpc_port=0, max_body_bytes=MIB, max_memory_bytes=2 * MIB)
    receiver = Receiver(Store(store_path), config).start()
    held = threading.Event()

    def never_sends() -> Iterator[bytes]:
        held.wait()
        yield from ()

    crowding, exporter = _own_connection(receiver), _own_connection(receiver)
    try:
        stalled = [crowding.stream_unary(TRACES).future(never_sends()) for _ in range(2)]
        time.sleep(0.3)  # both receiving, neither a second old
        now = time.time_ns()
        assert exporter.unary_unary(TRACES)(_spans([(now, now)]), timeout=5) == b""
        wait_for(lambda: any(call.done() for call in stalled))
        displaced = [call.exception() for call in stalled if call.done()]
        assert len(displaced) == 1  # the other waits on
        assert displaced[0].code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[union-attr]
    finally:
        held.set()
        crowding.close()
        exporter.close()
        receiver.stop()
    with Store(store_path) as reader:
        assert reader.count_spans() == 1


def test_calls_at_the_cap_that_never_send_make_room_for_an_exporter(store_path: Path) -> None:
    """At the cap of open calls, as at the HTTP side's connection cap, a newcomer displaces the
    call that has waited longest (over a second) for its message, whose client is told to retry.
    Before, the stalled calls held every place until their 30 s deadline, and a client reopening
    them as they ended kept every exporter out: each export was refused until it gave up."""
    config = ReceiverConfig(port=0, grpc_port=0, max_grpc_calls=4)  # a 30 s request deadline
    receiver = Receiver(Store(store_path), config).start()
    held = threading.Event()

    def never_sends() -> Iterator[bytes]:
        held.wait()
        yield from ()

    channel = grpc.insecure_channel(_target(receiver))
    try:
        stalled = [channel.stream_unary(TRACES).future(never_sends()) for _ in range(4)]
        time.sleep(1.2)
        exporter = OTLPSpanExporter(endpoint=_target(receiver), insecure=True, timeout=10)
        assert exporter.export(_finished_spans(2)) == SpanExportResult.SUCCESS  # type: ignore[arg-type]
        exporter.shutdown()
        wait_for(lambda: any(call.done() for call in stalled))
        displaced = [call.exception() for call in stalled if call.done()]
        assert len(displaced) == 1  # the others wait on
        assert displaced[0].code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[union-attr]
        trailers = dict(displaced[0].trailing_metadata())  # type: ignore[union-attr]
        assert RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]).retry_delay.seconds == 1
    finally:
        held.set()
        channel.close()
        receiver.stop()
    with Store(store_path) as reader:
        assert reader.count_spans() == 2


class RenewedCalls:
    """``count`` connections, each holding one call that never sends its message and renewing
    it every ``every`` seconds (always younger than a second, so never displaced)."""

    def __init__(self, receiver: Receiver, count: int, every: float) -> None:
        self.channels = [_own_connection(receiver) for _ in range(count)]
        self.every = every
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._renew, args=(c,)) for c in self.channels]
        for thread in self.threads:
            thread.start()

    def _renew(self, channel: grpc.Channel) -> None:
        while not self.stop.is_set():
            held = threading.Event()
            call = channel.stream_unary(TRACES).future(_never_sends(held))
            self.stop.wait(self.every)
            call.cancel()
            held.set()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        for channel in self.channels:
            channel.close()


def _never_sends(held: threading.Event) -> Iterator[bytes]:
    held.wait()
    yield from ()


def test_calls_renewed_faster_than_a_second_do_not_keep_an_exporter_out(store_path: Path) -> None:
    """Two calls may be receiving here. Connections each renewing a call that never sends,
    faster than a call may be displaced (a second), kept every place taken: the SDK's exporter
    was told UNAVAILABLE at each try and lost every batch (12 connections at the defaults: 12 of
    12 batches). Now a newcomer waits in line for a place, unread, and a renewed call queues
    behind it."""
    config = ReceiverConfig(port=0, grpc_port=0, max_body_bytes=MIB, max_memory_bytes=2 * MIB)
    receiver = Receiver(Store(store_path), config).start()
    renewed = RenewedCalls(receiver, count=4, every=0.3)
    try:
        time.sleep(1.0)  # every place taken, and renewed
        exporter = OTLPSpanExporter(endpoint=_target(receiver), insecure=True, timeout=10)
        results = [exporter.export(_finished_spans(2)) for _ in range(3)]  # type: ignore[arg-type]
        exporter.shutdown()
    finally:
        renewed.close()
        receiver.stop()
    assert results == [SpanExportResult.SUCCESS] * 3
    with Store(store_path) as reader:
        assert reader.count_spans() == 6


def test_a_call_waiting_in_line_holds_at_most_a_window_of_its_message(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call waiting for a place is not read, and grpc buffers what arrives of its message out
    of the budget's sight: its bandwidth probe widened that window to 4 MiB and more. It stays
    at HTTP/2's 64 KiB, while the call receiving is sent its whole message."""
    monkeypatch.setattr(_grpc, "MIN_AGE", 60.0)  # the call receiving keeps its place
    config = ReceiverConfig(port=0, grpc_port=0, max_body_bytes=16 * MIB, max_memory_bytes=16 * MIB)
    receiver = Receiver(Store(store_path), config).start()
    assert receiver.grpc_address is not None
    port = receiver.grpc_address[1]
    receiving = PartialGrpcCalls(port, calls=1, declared=16 * MIB, sent=15 * MIB)
    try:
        receiving.send(seconds=30)  # the one place is its own before the other call comes
        waiting = PartialGrpcCalls(port, calls=1, declared=16 * MIB, sent=15 * MIB)
        try:
            waiting.send(seconds=3)  # as much as its windows let it
        finally:
            waiting.sock.close()
    finally:
        receiving.sock.close()
        receiver.stop()
    assert not receiving.unsent  # all of it sent
    assert not waiting.ended
    assert 15 * MIB - len(waiting.unsent[1]) <= 65_535


def test_a_connection_filling_the_line_makes_room_for_another(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The line holds what its places serve in 10 s, or fewer (3 calls here, with 2 MiB of
    memory budget). A client filling it with calls on one connection keeps no other connection
    out: a newcomer (its own next call too) takes the place in line of that connection's last
    call, which is told to retry."""
    monkeypatch.setattr(_grpc, "MIN_AGE", 60.0)  # nothing is displaced for its age
    config = ReceiverConfig(port=0, grpc_port=0, max_body_bytes=MIB, max_memory_bytes=2 * MIB)
    receiver = Receiver(Store(store_path), config).start()
    held = threading.Event()
    first, second, crowding, exporter = (_own_connection(receiver) for _ in range(4))
    try:
        placed = [c.stream_unary(TRACES).future(_never_sends(held)) for c in (first, second)]
        time.sleep(0.3)  # both places taken
        assert receiver.grpc is not None and receiver.grpc.max_waiting == 3
        waiting = [crowding.stream_unary(TRACES).future(_never_sends(held)) for _ in range(4)]
        wait_for(lambda: any(call.done() for call in waiting))  # the line is 3 long
        now = time.time_ns()
        answer = exporter.unary_unary(TRACES).future(_spans([(now, now)]), timeout=20)
        wait_for(lambda: sum(call.done() for call in waiting) == 2)  # one more for the exporter
        told = [call.exception().code() for call in waiting if call.done()]  # type: ignore[union-attr]
        assert told == [grpc.StatusCode.UNAVAILABLE] * 2
        for call in placed:
            call.cancel()  # places free: the line moves on, and the exporter's call is served
        assert answer.result() == b""
    finally:
        held.set()
        for channel in (first, second, crowding, exporter):
            channel.close()
        receiver.stop()
    with Store(store_path) as reader:
        assert reader.count_spans() == 1


def test_calls_ended_as_they_get_a_place_leave_no_warning(store_path: Path) -> None:
    """Clients ending their calls (short deadlines, calls cancelled) while others take and free
    places: a call could end just as its message was to be read, and the collector printed
    "RuntimeWarning: coroutine '_one_message' was never awaited" on stderr (1274 times in 15 s
    of this, 8 connections). Now nothing."""
    config = ReceiverConfig(port=0, grpc_port=0, max_body_bytes=MIB, max_memory_bytes=2 * MIB)
    receiver = Receiver(Store(store_path), config).start()
    stop = threading.Event()

    def churn() -> None:
        channel = _own_connection(receiver)
        deadlines = itertools.cycle([0.001, 0.005, 0.01, 0.02, 0.05])
        while not stop.is_set():
            now = time.time_ns()
            channel.unary_unary(TRACES).future(_spans([(now, now)]), timeout=next(deadlines))
            held = threading.Event()
            stalled = channel.stream_unary(TRACES).future(_never_sends(held))
            stop.wait(0.01)
            stalled.cancel()
            held.set()
        channel.close()

    gc.collect()  # what earlier tests left (an unclosed file's ResourceWarning) is not this one's
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        clients = [threading.Thread(target=churn) for _ in range(8)]
        for client in clients:
            client.start()
        time.sleep(5)
        stop.set()
        for client in clients:
            client.join()
        receiver.stop()
        gc.collect()
    # ResourceWarnings left out: a collection here may still find another test's unclosed files
    said = [str(w.message) for w in seen if not issubclass(w.category, ResourceWarning)]
    assert said == []


class StalledCallsFrom:
    """``count`` connections from ``address`` (another loopback address than the exporter's),
    each holding one call that never sends its message and opening a new one on a new
    connection as soon as it is ended: raw HTTP/2, as a grpc client cannot choose its address."""

    def __init__(self, address: str, port: int, count: int) -> None:
        self.address, self.port = address, port
        self.stop = threading.Event()
        self.ended = 0
        self.threads = [threading.Thread(target=self._renew) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def _renew(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(OSError), self._stalled_call() as sock:
                while not self.stop.is_set() and not self._call_ended(sock):
                    pass
            self.ended += 1

    def _stalled_call(self) -> socket.socket:
        sock = socket.socket()
        sock.bind((self.address, 0))
        sock.connect(("127.0.0.1", self.port))
        sock.settimeout(0.2)
        fields = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"127.0.0.1"),
                  (b":path", TRACES.encode()), (b"content-type", b"application/grpc"),
                  (b"te", b"trailers")]  # fmt: skip
        headers = b"".join(_h2_literal(name, value) for name, value in fields)
        sock.sendall(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0, b"")  # SETTINGS
            + _h2_frame(4, 1, 0, b"")  # SETTINGS ACK (of the server's, sent first or not)
            + _h2_frame(1, 4, 1, headers)  # HEADERS, END_HEADERS: a call, no message
        )  # fmt: skip
        return sock

    @staticmethod
    def _call_ended(sock: socket.socket) -> bool:
        """Whether what arrived ends the call (RST_STREAM, trailers, GOAWAY or a closed socket);
        frames split across reads are read no further: the server's answer comes in one piece."""
        try:
            data = sock.recv(65_536)
        except TimeoutError:
            return False
        if not data:  # closed
            return True
        kinds = set()  # (type, END_STREAM flag) of each frame
        while len(data) >= 9:
            kinds.add((data[3], data[4] & 0x1))
            data = data[9 + int.from_bytes(data[:3], "big") :]
        return bool(kinds & {(3, 0), (3, 1), (1, 1), (7, 0)})

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def test_connections_from_one_address_do_not_keep_an_exporter_from_another_out(
    store_path: Path,
) -> None:
    """Connections each holding a call that never sends its message, reopened as soon as they
    are displaced, kept the places and the line full: an exporter's call was told to retry, or
    waited its turn behind them, until its deadline (120 such connections against the defaults:
    0 of 12 batches stored). Calls from another client address than theirs now go first, and
    take the place of one of theirs (here 2 places and a line of 3, against 8 connections)."""
    config = ReceiverConfig(port=0, grpc_port=0, max_body_bytes=MIB, max_memory_bytes=2 * MIB)
    receiver = Receiver(Store(store_path), config).start()
    assert receiver.grpc_address is not None
    flood = StalledCallsFrom("127.0.0.2", receiver.grpc_address[1], count=8)
    try:
        wait_for(lambda: flood.ended >= 20)  # places and line full, their calls displaced
        exporter = OTLPSpanExporter(endpoint=_target(receiver), insecure=True, timeout=5)
        results = [exporter.export(_finished_spans(2)) for _ in range(3)]  # type: ignore[arg-type]
        exporter.shutdown()
    finally:
        flood.close()
        receiver.stop()
    assert results == [SpanExportResult.SUCCESS] * 3
    with Store(store_path) as reader:
        assert reader.count_spans() == 6


# `tracekit collector` where grpcio cannot be imported (installed without the cli extra's grpcio)
_WITHOUT_GRPCIO = [
    sys.executable, "-c",
    "import sys; sys.modules['grpc'] = None\n"  # what a missing package looks like
    "from tracekit_cli.main import main; main()", "collector", "--port", "0",
]  # fmt: skip


def test_without_grpcio_an_asked_for_grpc_port_says_what_to_do(tmp_path: Path) -> None:
    """One line in the command's terms: it said 'pass grpc_port=None', a Python argument."""
    result = subprocess.run(
        [*_WITHOUT_GRPCIO, "--grpc-port", "4399", "--store", str(tmp_path / "n.db")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "tracekit collector: OTLP/gRPC needs grpcio: pip install 'tracekit[cli]'"
        " (--grpc-port 0 for OTLP/HTTP only)\n"
    )


def test_without_grpcio_the_default_serves_http_and_says_why_not_grpc(tmp_path: Path) -> None:
    line, warning = _first_line_and_stderr([*_WITHOUT_GRPCIO, "--store", str(tmp_path / "n.db")])
    assert "(OTLP/HTTP)" in line and "OTLP/gRPC" not in line
    assert warning == (
        "tracekit collector: OTLP/gRPC not started: OTLP/gRPC needs grpcio: pip install"
        " 'tracekit[cli]'; serving OTLP/HTTP only (--grpc-port PORT for another port,"
        " --grpc-port 0 for none)\n"
    )


def test_idle_connections_at_the_cap_make_room_for_an_exporter(store_path: Path) -> None:
    """Connections left open and idle at grpc's connection cap (a service leaking a channel per
    export, or a client opening connections and sending nothing) kept every exporter out: grpc
    closed each newcomer, and the exporter gave up (beside 600 idle connections at the default
    cap of 512, 3 of 3 exports failed). The longest-idle connections past seven eighths of the
    cap are now closed, as the HTTP side displaces its idle ones; a client on one of them
    connects again when it next calls."""
    config = ReceiverConfig(port=0, grpc_port=0, max_connections=8)
    receiver = Receiver(Store(store_path), config).start()
    leaked = [_own_connection(receiver) for _ in range(8)]
    try:
        for channel in leaked:
            grpc.channel_ready_future(channel).result(timeout=10)  # grpc holds all 8
        exporter = OTLPSpanExporter(endpoint=_target(receiver), insecure=True, timeout=5)
        results = [exporter.export(_finished_spans(2)) for _ in range(2)]  # type: ignore[arg-type]
        exporter.shutdown()
        again = OTLPSpanExporter(endpoint=_target(receiver), insecure=True, timeout=5)
        results.append(again.export(_finished_spans(2)))  # type: ignore[arg-type]
        again.shutdown()
    finally:
        for channel in leaked:
            channel.close()
        receiver.stop()
    assert results == [SpanExportResult.SUCCESS] * 3
    with Store(store_path) as reader:
        assert reader.count_spans() == 6


def test_a_connection_with_a_call_open_is_not_closed_for_idle(store_path: Path) -> None:
    """A connection whose call waits (for its message, for room in the write queue, for its
    commit) receives nothing meanwhile; making room at the connection cap, it is not taken for
    an idle one: an older idle connection without a call is closed instead."""
    config = ReceiverConfig(port=0, grpc_port=0, max_connections=8)
    receiver = Receiver(Store(store_path), config).start()
    held, closed = threading.Event(), threading.Event()
    calling = _own_connection(receiver)
    waiting = calling.stream_unary(TRACES).future(_never_sends(held))
    assert receiver.grpc is not None
    wait_for(lambda: receiver.grpc._open_calls == 1)  # its connection the longest idle then
    leaked = [_own_connection(receiver) for _ in range(7)]

    def seen(state: grpc.ChannelConnectivity) -> None:
        if state is not grpc.ChannelConnectivity.READY:
            closed.set()

    try:
        for channel in leaked:
            grpc.channel_ready_future(channel).result(timeout=10)
            channel.subscribe(seen)
        # one connection closed, as 8 > 7 (seven eighths of 8): a leaked one, not the call's
        wait_for(lambda: closed.is_set() or waiting.done(), 10, "a connection closed")
        assert not waiting.done()
        assert closed.is_set()
    finally:
        held.set()
        for channel in [calling, *leaked]:
            channel.close()
        receiver.stop()
