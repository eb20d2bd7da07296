"""Several processes writing through the SDK exporter at once, while another process reads."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tracekit.records import LogRecordData
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


def test_a_store_first_created_by_two_threads_keeps_its_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The span and log exporters of one process (say a Celery child stopping) create the store
    side by side. POSIX drops every lock a process holds on a file when it closes any descriptor
    of it: the descriptor that created the file 0600 was closed after the other thread's SQLite
    connection had taken its locks, and that connection then held none. Another process's close
    then deleted the WAL under it: "disk I/O error" (SQLITE_IOERR_RDLOCK) and lost records.

    A slow ``fchmod`` (a loaded machine, a network filesystem) widens the window so the race
    happened every time.
    """
    path = tmp_path / "new.db"
    first, second = Store(path), Store(path)
    creating, opened = threading.Event(), threading.Event()
    fchmod = os.fchmod

    def slow_fchmod(fd: int, mode: int) -> None:
        fchmod(fd, mode)
        creating.set()
        opened.wait(1)  # the other thread's open, unless it must wait for this one to finish

    monkeypatch.setattr(os, "fchmod", slow_fchmod)

    def second_writes() -> None:
        creating.wait(5)
        second.write_logs([_log("second, while the file is created")])
        opened.set()

    thread = threading.Thread(target=second_writes)
    thread.start()
    first.write_logs([_log("first, creating the file")])
    thread.join()
    monkeypatch.undo()

    assert _in_another_process("write", path) == "written"  # it closes its connection when done
    first.write_logs([_log("first, after the other process")])
    second.write_logs([_log("second, after the other process")])

    # Read by another process (`tracekit trace`) while this one still runs.
    assert _in_another_process("count", path) == "5"
    first.close()
    second.close()


def _in_another_process(action: str, path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _ANOTHER_PROCESS, action, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


_ANOTHER_PROCESS = """
import sys
from tracekit.records import LogRecordData
from tracekit.store import Store
with Store(sys.argv[2]) as store:
    if sys.argv[1] == "write":
        store.write_logs([LogRecordData(1, "other", "INFO", 9, "another process")])
        print("written")
    else:
        print(store.count_logs())
"""


def _log(body: str) -> LogRecordData:
    return LogRecordData(1_700_000_000_000_000_000, "svc", "INFO", 9, body)
