"""A store used before ``fork()`` and then by both sides: prefork servers and workers (gunicorn
with ``--preload``, Celery, multiprocessing) do exactly this when ``tracekit.init()`` runs in
the parent and the parent has written already.

SQLite keeps each file's lock state in process memory; a child that inherits the parent's open
connections believes it holds locks it does not. When the parent then closed its last
connection it took the file for its own, checkpointed and deleted the WAL, and the child's later
commits went into that deleted file: reported as written, lost.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tracekit.records import LogRecordData
from tracekit.store import Store
from tracekit.store.exporter import StoreSpanExporter

CHILDREN = 2
SPANS_PER_CHILD = 30


def _fork(child: Callable[[], object]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which must never return into pytest
        signal.alarm(20)  # a child that hangs on a lock dies, and the test says so
        status = 1
        try:
            child()
            status = 0
        finally:
            os._exit(status)
    return pid


def _wait(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_children_keep_writing_after_the_parent_closes_its_connections(tmp_path: Path) -> None:
    path = tmp_path / "forked.db"
    exporter = StoreSpanExporter(path)
    provider = TracerProvider(resource=Resource.create({"service.name": "prefork"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    tracer.start_span("parent, before forking").end()  # the parent's connections are open

    halfway, heard = os.pipe()
    go_on, told = os.pipe()

    def child(number: int) -> None:
        for n in range(SPANS_PER_CHILD):
            if n == SPANS_PER_CHILD // 2:
                os.write(heard, b"x")
                os.read(go_on, 1)  # until the parent has closed its connections
            tracer.start_span(f"child {number} span {n}").end()

    pids = [_fork(lambda number=number: child(number)) for number in range(CHILDREN)]
    for _ in pids:
        os.read(halfway, 1)
    exporter.shutdown()  # the parent stops first, as a prefork server's master may
    os.write(told, b"x" * CHILDREN)
    assert [_wait(pid) for pid in pids] == [0] * CHILDREN

    with Store(path) as store:
        names = {span.name for span in store.spans_since(0)}
    assert len(names) == 1 + CHILDREN * SPANS_PER_CHILD
    assert "child 1 span 29" in names


def test_a_store_forked_while_another_thread_writes_stays_usable_on_both_sides(
    tmp_path: Path,
) -> None:
    path = tmp_path / "busy.db"
    store = Store(path)
    store.create()
    stop = threading.Event()
    written = 0

    def keep_writing() -> None:
        nonlocal written
        while not stop.is_set():
            store.write_logs([_log(f"parent {written}")])
            written += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        pids = [_fork(lambda n=n: store.write_logs([_log(f"child {n}")])) for n in range(CHILDREN)]
        assert [_wait(pid) for pid in pids] == [0] * CHILDREN
    finally:
        stop.set()
        writer.join()
    store.close()

    with Store(path) as reader:
        assert reader.count_logs() == written + CHILDREN


def _log(body: str) -> LogRecordData:
    return LogRecordData(1_700_000_000_000_000_000, "prefork", "INFO", 9, body)
