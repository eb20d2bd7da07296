"""Several processes writing through the SDK exporter at once, while another process reads."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from tracekit.store import Store

SPANS_PER_PROCESS = 400


def _service_process(path: str, name: str) -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from tracekit.store.exporter import StoreSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    processor = BatchSpanProcessor(
        StoreSpanExporter(path), max_export_batch_size=20, schedule_delay_millis=5
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for number in range(SPANS_PER_PROCESS):
        with tracer.start_as_current_span(f"op-{number}", attributes={"correlation.id": name}):
            pass
    provider.shutdown()


def _reader_process(path: str, results: mp.Queue) -> None:  # type: ignore[type-arg]
    store = Store(path)
    counts = [store.count_spans() for _ in range(50)]
    results.put(counts)


def test_many_writer_processes_and_a_reader(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    Store(path).create()
    ctx = mp.get_context("spawn")
    results: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    writers = [ctx.Process(target=_service_process, args=(path, f"svc-{i}")) for i in range(4)]
    reader = ctx.Process(target=_reader_process, args=(path, results))
    for process in [*writers, reader]:
        process.start()
    for process in [*writers, reader]:
        process.join(60)
        assert process.exitcode == 0
    counts = results.get(timeout=5)
    assert counts == sorted(counts)  # a reader only ever sees the store grow
    store = Store(path)
    assert store.count_spans() == 4 * SPANS_PER_PROCESS
    assert len(store.spans_by_correlation_id("svc-2")) == SPANS_PER_PROCESS
