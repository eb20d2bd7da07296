"""Another process holds the store's write lock (an operator's ``sqlite3`` shell mid-transaction,
a long ``VACUUM``): an export is told to retry soon, and a stop keeps its deadline."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from conditions import wait_for
from tests.receiver.conftest import Reply, post

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store

JSON = {"Content-Type": "application/json"}
TRACE_ID = "1" * 32
STOP_TIMEOUT = 3.0


def _held(lock: threading.RLock) -> bool:
    """Whether another thread holds ``lock``."""
    if not lock.acquire(blocking=False):
        return True
    lock.release()
    return False


def _spans(trace_id: str, name: str, span: int = 2) -> bytes:
    """One span of ``trace_id`` named ``name`` (id ``span``) in OTLP/JSON."""
    now = time.time_ns()
    record = {"traceId": trace_id, "spanId": f"{span:016x}", "name": name,
              "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1000)}  # fmt: skip
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [record]}]}]}).encode()


def test_an_export_meeting_a_write_locked_store_gets_503_soon_and_the_stop_ends(
    store_path: Path,
) -> None:
    """The first request after the lock was taken opened the interner's connection, whose
    write check waited out eight busy timeouts, and the interner tried twice: its 503 came
    after 85 s (an exporter gives up after 10 s), every other request waited behind it, and a
    stop begun meanwhile took 84 s, past the 35 s promised. Its interning now waits two busy
    timeouts (5 s each)."""
    receiver = Receiver(Store(store_path), ReceiverConfig(port=0)).start()
    assert receiver.wait_ready(30)
    holder = sqlite3.connect(store_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    replies: list[Reply] = []
    exporter = threading.Thread(
        target=lambda: replies.append(
            post(receiver, "/v1/traces", _spans(TRACE_ID, f"new {time.time_ns()}"), JSON)
        )
    )
    try:
        exporter.start()
        wait_for(lambda: _held(receiver.service.decode_lock), 10, "the request decoding")
        began = time.monotonic()
        receiver.stop()
        took = time.monotonic() - began
        exporter.join(30)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert replies and replies[0].status == 503, replies
    assert replies[0].headers["retry-after"] == "5"
    assert took < 20, took  # was 84 s


def test_a_stop_with_the_in_process_writer_waiting_on_the_lock_keeps_its_deadline(
    store_path: Path,
) -> None:
    """With ``writer_process=False`` the writer is a thread of the receiver, whose write cannot
    be cut short: a stop waited for it (SQLite's busy timeouts, eight times, then each queued
    request's alone), 41 s with one export at the default 35 s deadline. The stop now returns
    at its deadline, and the write ends in the background: committed once the lock is gone."""
    config = ReceiverConfig(port=0, writer_process=False, stop_timeout=STOP_TIMEOUT)
    receiver = Receiver(Store(store_path), config).start()
    assert post(receiver, "/v1/traces", _spans(TRACE_ID, "warm up"), JSON).status == 200
    holder = sqlite3.connect(store_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    exporter = threading.Thread(
        target=post, args=(receiver, "/v1/traces", _spans(TRACE_ID, "warm up", 3), JSON)
    )
    try:
        exporter.start()  # its strings are interned already: it waits in the writer's write
        queue = receiver.queue  # taken from the queue, not written yet:
        wait_for(lambda: queue.depth == 0 and bool(queue._unwritten_by), 10, "the write")
        began = time.monotonic()
        receiver.stop()
        took = time.monotonic() - began
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert took < STOP_TIMEOUT + 3, took  # was 41 s at the default 35 s, 42 s at 3 s
    reader = Store(store_path)
    try:
        wait_for(lambda: len(reader.spans_by_trace_ids([TRACE_ID])) == 2, 60, "the commit")
    finally:
        reader.close()
