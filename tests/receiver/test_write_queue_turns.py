"""A full write queue hands its room out in turn, client by client.

gRPC calls wait for room in a full write queue (OpenTelemetry JS's gRPC exporter retries nothing,
so a refusal loses its batch). A client flooding calls that each fill the queue kept every
freed place for itself: each was taken by one of its waiting calls the moment the writer made
it, and an OTLP/HTTP exporter, told 503 at once, retried into a full queue until it gave up (0
of 5 batches stored). Room now goes first to the connection with the fewest records queued, an
HTTP request waiting its turn too. Another gRPC client, waiting as the flood's calls do, kept
getting in before and still does (guarded here, as it is what the turns must not break).

A real receiver on loopback; the flood is raw gRPC calls; the HTTP exporter is the OpenTelemetry
Python SDK's, the gRPC client calls as OpenTelemetry JS's exporter does.
"""

from __future__ import annotations

import http.client
import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conditions import wait_for
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.receiver.conftest import storing, writer_pid

from tracekit.receiver import Receiver, ReceiverConfig, _http
from tracekit.receiver._admission import BODY_COST, RECORD_COST
from tracekit.store import Store

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PROTOBUF_TYPE = "application/x-protobuf"
PROTOBUF = {"Content-Type": PROTOBUF_TYPE}
QUEUE = 2_000  # records: each flooding call fills it alone (as a slow disk makes a queue full)
CHECKOUT_IDS = (n.to_bytes(16, "big") for n in itertools.count(1))


def _request(service: str, count: int) -> bytes:
    """One call's message: ``count`` spans of ``service``, each of a new trace (``TRACE_ID``
    and a counter for checkout's, random for the flood's)."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    name = AnyValue(string_value=service)
    resource_spans.resource.attributes.add(key="service.name", value=name)
    spans = resource_spans.scope_spans.add().spans
    now = time.time_ns()
    for _ in range(count):
        trace_id = next(CHECKOUT_IDS) if service == "checkout" else os.urandom(16)
        span = spans.add(trace_id=trace_id, span_id=os.urandom(8), name="GET /orders")
        span.start_time_unix_nano, span.end_time_unix_nano = now, now + 1_000
    return request.SerializeToString()


def _target(receiver: Receiver) -> str:
    assert receiver.grpc_address is not None
    return "{}:{}".format(*receiver.grpc_address)


class Flood:
    """Calls after calls from ``callers`` threads, each willing to wait a minute for room."""

    def __init__(self, target: str, callers: int) -> None:
        self.body = _request("flood", QUEUE)  # each call fills the queue alone
        self.stop = threading.Event()
        self.channel = grpc.insecure_channel(target)
        self.threads = [threading.Thread(target=self._call) for _ in range(callers)]
        for thread in self.threads:
            thread.start()

    def _call(self) -> None:
        export = self.channel.stream_unary(TRACES)
        while not self.stop.is_set():
            try:
                export(iter([self.body]), timeout=60)
            except grpc.RpcError:
                time.sleep(0.05)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        self.channel.close()


@pytest.fixture
def flooded(store_path: Path) -> Iterator[Receiver]:
    """A receiver whose write queue a gRPC client keeps full, with calls waiting for room."""
    config = ReceiverConfig(port=0, grpc_port=0, queue_capacity=QUEUE)
    receiver = Receiver(Store(store_path), config).start()
    assert receiver.grpc_address is not None
    flood = Flood(_target(receiver), callers=24)
    wait_for(lambda: _flood_waiting(receiver), 60, "the flood's calls waiting for room")
    yield receiver
    flood.close()
    receiver.stop()


def _flood_waiting(receiver: Receiver) -> bool:
    """The queue is full and calls wait in line for room (not a second of sleep: a loaded
    machine took longer, and the test then ran beside no flood at all)."""
    return receiver.queue.depth == QUEUE and bool(receiver.queue._line)


def _batch(service: str) -> list[object]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for n in range(100):
        provider.get_tracer("test").start_span(f"GET /orders/{n}").end()
    return list(memory.get_finished_spans())


def test_an_http_exporter_gets_its_turn_in_a_queue_a_grpc_flood_keeps_full(
    flooded: Receiver, store_path: Path
) -> None:
    """Before, each of its 5 batches was told 503 at every retry for 10 s, and lost."""
    exporter = HttpExporter(endpoint=f"{flooded.endpoint}/v1/traces")
    batches = [_batch("checkout") for _ in range(5)]
    results = [exporter.export(batch) for batch in batches]  # type: ignore[arg-type]
    assert results == [SpanExportResult.SUCCESS] * 5
    with Store(store_path) as store:
        trace_ids = {f"{span.context.trace_id:032x}" for b in batches for span in b}  # type: ignore[attr-defined]
        assert len(store.spans_by_trace_ids(trace_ids)) == 500


def test_a_grpc_client_retrying_nothing_gets_its_turn_in_a_queue_a_grpc_flood_keeps_full(
    flooded: Receiver, store_path: Path
) -> None:
    """As OpenTelemetry JS's gRPC exporter: one call per batch on its own connection, 10 s
    deadline, never retried."""
    with grpc.insecure_channel(_target(flooded)) as channel:
        export = channel.stream_unary(TRACES)
        for _ in range(5):
            export(iter([_request("checkout", 100)]), timeout=10)  # raises unless OK
    with Store(store_path) as store:
        stored = store.spans_by_trace_ids(f"{n:032x}" for n in range(1, 501))
        assert len(stored) == 500


def _call_cost() -> int:
    """What one flooding call holds of the memory budget once decoded."""
    return len(_request("flood", QUEUE)) * BODY_COST[PROTOBUF_TYPE] + QUEUE * RECORD_COST


def _in_line(receiver: Receiver, size: int) -> bool:
    """Whether a request of ``size`` records waits in line for room in the write queue."""
    return any(ticket.size == size for ticket in list(receiver.queue._line))


def _post(receiver: Receiver, body: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(*receiver.address, timeout=60)
    try:
        connection.request("POST", "/v1/traces", body, PROTOBUF)
        response = connection.getresponse()
        return response.status, response.read()[:60]
    finally:
        connection.close()


def test_grpc_calls_waiting_for_room_leave_memory_for_http_exporters(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 gRPC calls at once, each as large as the queue, with a memory budget of 10 such calls:
    the calls waiting for room held nearly all of it, and about half of 40 OTLP/HTTP requests
    were told 503 (memory limit) at once. Calls waiting long for room now hold at most half the
    budget (the others are told UNAVAILABLE at once, and retry), so HTTP requests find room.
    What this asserts is memory: the HTTP requests wait for their turn in the queue as long as
    it takes (a loaded machine's writer took over a second per call, their 1 s wait)."""
    monkeypatch.setattr(_http, "_WAIT_FOR_ROOM", 30.0)
    call_cost = _call_cost()
    config = ReceiverConfig(
        port=0, grpc_port=0, queue_capacity=QUEUE, max_memory_bytes=10 * call_cost
    )
    receiver = Receiver(Store(store_path), config).start()
    flood = Flood(_target(receiver), callers=12)
    replies = []
    try:  # its calls are waiting for room, holding the share they may
        wait_for(lambda: receiver.budget.waiting > 4 * call_cost, 60, "the calls waiting")
        replies = [_post(receiver, _request("checkout", 100)) for _ in range(20)]
    finally:
        flood.close()
        receiver.stop()
    assert replies == [(200, b"")] * 20


def test_grpc_calls_queued_behind_a_held_writer_count_in_the_waiting_share(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer held (a store on a hung disk, or a loaded machine's writer) with 7 calls as
    large as the queue and a budget of 10 such calls: the calls queued and being written held
    their memory outside the waiting share, beside 5 calls waiting, so 7 of 10 were held and an
    HTTP request of 3.5 such calls' worth was told 503 (memory limit). The share (half the
    budget) now holds them from their wait to their commit: 5 of 10, the request is stored."""
    monkeypatch.setattr(_http, "_WAIT_FOR_ROOM", 30.0)
    call_cost = _call_cost()
    config = ReceiverConfig(
        port=0, grpc_port=0, queue_capacity=QUEUE, max_memory_bytes=10 * call_cost
    )
    receiver = storing(Receiver(Store(store_path), config).start())
    writer = writer_pid(receiver)
    os.kill(writer, signal.SIGSTOP)
    flood = Flood(_target(receiver), callers=7)
    try:
        wait_for(lambda: receiver.budget.waiting > 4 * call_cost, 60, "the share taken")
        replies: list[tuple[int, bytes]] = []
        count = 16 * QUEUE // 5  # 3.2 calls' worth of memory
        posting = threading.Thread(
            target=lambda: replies.append(_post(receiver, _request("checkout", count)))
        )
        posting.start()  # answered at once if refused, else in line for room
        wait_for(
            lambda: replies or _in_line(receiver, count), 60, "the request's fate",
            ignoring=(RuntimeError,),  # the line changed as it was read
        )  # fmt: skip
        os.kill(writer, signal.SIGCONT)
        posting.join(60)
    finally:
        os.kill(writer, signal.SIGCONT)
        flood.close()
        receiver.stop()
    assert replies == [(200, b"")]
