"""Crash safety and a bounded load test against ``tracekit collector`` running as a subprocess."""

from __future__ import annotations

import http.client
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from conditions import wait_for
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Tracer, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from tests.receiver._collector_process import start_collector

from tracekit.store import Store
from tracekit.store._writer import WAL_BOUND_BYTES


def _request(trace_id: bytes, span_ids: list[bytes]) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "load"
    scope = resource_spans.scope_spans.add()
    for span_id in span_ids:
        span = scope.spans.add()
        span.trace_id, span.span_id, span.name = trace_id, span_id, "op"
        span.start_time_unix_nano, span.end_time_unix_nano = time.time_ns(), time.time_ns() + 1000
        span.attributes.add(key="http.route").value.string_value = "/orders/{id}"
    return request.SerializeToString()


def _send(
    port: int, body: bytes, conn: http.client.HTTPConnection | None
) -> tuple[int, http.client.HTTPConnection]:
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
    response = conn.getresponse()
    response.read()
    return response.status, conn


def test_kill_9_during_ingest_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Every span answered with 200 before SIGKILL is in the store after a restart."""
    store_path = tmp_path / "crash.db"
    process, port = start_collector(store_path)
    acked: list[bytes] = []
    stop = threading.Event()

    def sender() -> None:
        conn = None
        while not stop.is_set():
            ids = [os.urandom(8) for _ in range(200)]
            try:
                status, conn = _send(port, _request(os.urandom(16), ids), conn)
            except OSError:
                return  # the collector died mid-request: that batch was never acknowledged
            if status == 200:
                acked.extend(ids)

    threads = [threading.Thread(target=sender) for _ in range(3)]
    for thread in threads:
        thread.start()
    # ingest under way (not 1.5 s of it: a loaded machine's writer takes seconds to start)
    wait_for(lambda: len(acked) > 1000, 60, "1,000 spans acknowledged")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    stop.set()
    for thread in threads:
        thread.join()
    assert len(acked) > 1000  # the kill really landed during ingest

    restarted, port = start_collector(store_path)
    try:
        assert _send(port, _request(os.urandom(16), [os.urandom(8)]), None)[0] == 200
        with Store(store_path) as store:
            stored = {s.span_id for s in store.spans_since(0, limit=10_000_000)}
        missing = {i.hex() for i in acked} - stored
        assert not missing, f"{len(missing)} acknowledged spans lost"
    finally:
        restarted.terminate()
        assert restarted.wait(30) == 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sixty_second_load_count_sent_equals_count_stored(tmp_path: Path) -> None:
    """Sustained ingest for 60 s at a fixed pace (3,000 spans/s, 180,000 spans in all)."""
    store_path = tmp_path / "load.db"
    process, port = start_collector(store_path)
    per_request, rate, seconds = 300, 3000, 60
    total = rate * seconds
    sent, retried = 0, 0
    conn = None
    started = time.monotonic()
    while sent < total:
        body = _request(os.urandom(16), [os.urandom(8) for _ in range(per_request)])
        status, conn = _send(port, body, conn)
        while status == 503:  # back-pressure: the receiver asked us to retry
            retried += 1
            time.sleep(0.2)
            status, conn = _send(port, body, conn)
        assert status == 200
        sent += per_request
        time.sleep(max(0.0, started + sent / rate - time.monotonic()))
    elapsed = time.monotonic() - started
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    with Store(store_path) as store:
        assert store.count_spans() == sent == total
    assert elapsed >= seconds - 1


class _CountingExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP exporter, counting the spans the collector acknowledged."""

    acknowledged = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        if result == SpanExportResult.SUCCESS:
            self.acknowledged += len(spans)
        return result


def _make_spans(tracer: Tracer, first: int, count: int) -> None:
    for n in range(first, first + count):
        # 4 KiB of unique text a span: the WAL grows by its bound every 16,000 spans
        attributes = {"n": n, "payload": os.urandom(2048).hex()}
        with tracer.start_as_current_span("GET /orders/{id}", attributes=attributes):
            pass


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_read_held_past_the_wal_bound_costs_an_sdk_exporter_no_spans(tmp_path: Path) -> None:
    """A read holds its snapshot (a backup, a long search) while an OTel SDK exports and the WAL
    grows past its bound. The writer's checkpoint waited 5 s for that read, holding the write
    lock; the exporter waited for its answer meanwhile, and the SDK's queue dropped what the
    application made during the wait: 13,000 of 180,000 spans at 3,000 spans/s ("Queue full,
    dropping Span.").

    Paced by this machine, not by the clock (a fixed 1,000 spans/s was more than a loaded
    machine's collector could take, held read or not): until the WAL passes its bound, spans are
    made as fast as the collector acknowledges them, which measures what it takes now; for the
    10 s after, at half that pace, with an SDK queue of 2 s of it. The writer pausing 5 s at a
    time (storing 29% of it) overflows that queue, however fast the machine."""
    store_path = tmp_path / "held.db"
    wal = Path(f"{store_path}-wal")
    process, port = start_collector(store_path)
    exporter = _CountingExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
    reader = sqlite3.connect(store_path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM spans").fetchone()
    step, made = 10, 0
    with _batch_tracer(exporter, queue=2048) as tracer:
        started = time.monotonic()
        while wal.stat().st_size <= WAL_BOUND_BYTES and made < 100_000:
            _make_spans(tracer, made, step)
            made += step
            behind = made - 1024  # never near the queue's 2,048
            wait_for(lambda: exporter.acknowledged >= behind, 60, "the exports")  # noqa: B023 (called here, at once)
        pace = made / (time.monotonic() - started)  # spans a second the collector takes now
        passed_bound = wal.stat().st_size > WAL_BOUND_BYTES
    past_bound = made
    rate = max(50, int(pace / 2))  # a 5 s pause makes 5 s of spans, the queue holds 2
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
    with _batch_tracer(exporter, queue=2 * rate) as tracer:
        started = time.monotonic()
        while made - past_bound < 10 * rate:  # 10 s past the bound
            _make_spans(tracer, made, step)
            made += step
            time.sleep(max(0.0, started + (made - past_bound) / rate - time.monotonic()))
    reader.execute("COMMIT")
    reader.close()
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    assert passed_bound  # the WAL passed its bound while the read held its snapshot
    with Store(store_path) as store:
        assert store.count_spans() == made, f"{pace:.0f} spans/s before the bound"


@contextmanager
def _batch_tracer(exporter: SpanExporter, queue: int) -> Iterator[Tracer]:
    """A tracer exporting through the SDK's batch processor with a queue of ``queue`` spans;
    flushed and shut down at the end."""
    provider = TracerProvider(resource=Resource.create({"service.name": "load"}))
    batches = BatchSpanProcessor(exporter, max_queue_size=queue, max_export_batch_size=queue // 4)
    provider.add_span_processor(batches)
    yield provider.get_tracer("load")
    provider.shutdown()


@pytest.mark.parametrize("damaged", ["strings", "spans"])
def test_a_damaged_store_is_said_on_the_log_and_not_retried_for_ever(
    tmp_path: Path, damaged: str
) -> None:
    """Pages of the file overwritten (a bad disk, a copy cut short): the collector still starts,
    but no export can be stored. It says why on its log, once, and answers 500, which OTLP
    exporters do not retry, instead of a silent 503 "retry later" they would retry for ever.
    The damage is met while interning strings (in the collector) or while writing the spans
    (in its writer process)."""
    store_path = tmp_path / "damaged.db"
    process, port = start_collector(store_path)
    for _ in range(10):
        _send(port, _request(os.urandom(16), [os.urandom(8) for _ in range(200)]), None)
    process.terminate()
    assert process.wait(30) == 0
    with sqlite3.connect(store_path) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        roots = [root for (root,) in conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE tbl_name = ? AND rootpage > 0", (damaged,)
        )]  # fmt: skip
    with store_path.open("r+b") as file:
        for root in roots:
            file.seek((root - 1) * size)
            file.write(b"\xff" * size)
    process, port = start_collector(store_path)
    try:
        statuses = {_send(port, _request(os.urandom(16), [os.urandom(8)]), None)[0]
                    for _ in range(3)}  # fmt: skip
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert statuses == {500}
    said = [line for line in stderr.splitlines() if "store" in line and "tracekit" in line]
    assert len(said) == 1, stderr
    assert said[0].startswith(f"tracekit receiver: the store at {store_path} refuses: ")
    assert said[0].endswith("DatabaseError: database disk image is malformed"), said
