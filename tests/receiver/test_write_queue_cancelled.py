"""A gRPC call cancelled while it waits for room in a full write queue leaves the line at once.

Its client was told CANCELLED and will never hear of its records, yet the call kept its place in
line, its share of the memory budget and one of the 16 threads that decode and store, for the
rest of its wait (up to 30 s), and its records were then stored all the same: a client that
sends them again stored them twice (logs have no id). Now it leaves the line when it is
cancelled, and only what calls still waiting were promised is stored.

The writer process is paused (SIGSTOP, as a slow disk would hold it) so that the queue stays
full: what each call is told depends on the order of events, not on timing. A real receiver, a
real grpc client.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import Counter
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
CALL = 100  # spans a call; the queue holds one call's worth


def _request(service: str) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = service
    spans = resource_spans.scope_spans.add().spans
    now = time.time_ns()
    for _ in range(CALL):
        span = spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name="GET /orders")
        span.start_time_unix_nano, span.end_time_unix_nano = now, now + 1_000
    return request.SerializeToString()


def _writer_pid() -> int:
    (writer,) = [p for p in multiprocessing.active_children() if p.name == "tracekit-writer"]
    return writer.pid or 0


def _until(condition: object, seconds: float) -> None:
    """Wait for an event of the receiver (at most ``seconds``, so that a test of a receiver that
    never gets there ends, and fails on what it then finds)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)


def test_a_call_cancelled_while_waiting_for_room_is_not_stored(store_path: Path) -> None:
    config = ReceiverConfig(port=0, grpc_port=0, queue_capacity=CALL, batch_size=CALL)
    receiver = Receiver(Store(store_path), config).start()
    assert receiver.grpc_address is not None
    assert receiver.wait_ready(30)  # a writer that opened the store, then stalls: it takes calls
    writer = _writer_pid()
    queue = receiver.queue
    os.kill(writer, signal.SIGSTOP)
    try:
        with grpc.insecure_channel("{}:{}".format(*receiver.grpc_address)) as channel:
            export = channel.unary_unary(TRACES)
            sent = [export.future(_request("first"), timeout=120)]
            _until(lambda: queue._unwritten_by and not queue.depth, 30)  # the writer has it
            sent.append(export.future(_request("second"), timeout=120))
            _until(lambda: queue.depth == CALL, 30)  # the queue is full
            waiting = export.future(_request("cancelled"), timeout=120)  # waits up to 30 s
            _until(lambda: queue._line, 30)
            waiting.cancel()
            _until(lambda: not queue._line, 20)  # before: in line until its wait ended
            os.kill(writer, signal.SIGCONT)
            assert [call.result(timeout=60) for call in sent] == [b"", b""]
            assert waiting.cancelled()
    finally:
        os.kill(writer, signal.SIGCONT)
        receiver.stop()
    with Store(store_path) as store:
        stored = Counter(span.service for span in store.spans_since(0))
    assert stored == {"first": CALL, "second": CALL}  # before: "cancelled" too


def test_a_call_cancelled_once_queued_before_the_writer_took_it_is_not_stored(
    store_path: Path,
) -> None:
    """Cancelled just after it was given room (queued, the writer not yet holding it), a call
    was stored all the same when the writer came to it: its client, told CANCELLED (a deadline
    passed while the store was slow), sent the records again and they were stored twice."""
    config = ReceiverConfig(port=0, grpc_port=0, queue_capacity=2 * CALL, batch_size=CALL)
    receiver = Receiver(Store(store_path), config).start()
    assert receiver.grpc_address is not None
    assert receiver.wait_ready(30)  # a writer that opened the store, then stalls: it takes calls
    writer = _writer_pid()
    queue = receiver.queue
    os.kill(writer, signal.SIGSTOP)
    try:
        with grpc.insecure_channel("{}:{}".format(*receiver.grpc_address)) as channel:
            export = channel.unary_unary(TRACES)
            sent = [export.future(_request("first"), timeout=120)]
            _until(lambda: queue._unwritten_by and not queue.depth, 30)  # the writer has it
            cancelled = export.future(_request("cancelled"), timeout=120)
            _until(lambda: queue.depth == CALL, 30)  # queued, waiting for its commit
            cancelled.cancel()
            _until(lambda: not queue.depth, 20)  # before: it stayed queued
            os.kill(writer, signal.SIGCONT)
            assert [call.result(timeout=60) for call in sent] == [b""]
            assert cancelled.cancelled()
    finally:
        os.kill(writer, signal.SIGCONT)
        receiver.stop()
    with Store(store_path) as store:
        stored = Counter(span.service for span in store.spans_since(0))
    assert stored == {"first": CALL}  # before: "cancelled" too
