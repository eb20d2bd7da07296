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


def _held(lock: threading.RLock) -> bool:
    """Whether another thread holds ``lock``."""
    if not lock.acquire(blocking=False):
        return True
    lock.release()
    return False


def _spans_with_new_strings() -> bytes:
    """A request whose span name is new to the store: it must be interned, a write."""
    now = time.time_ns()
    span = {"traceId": "1" * 32, "spanId": "2" * 16, "name": f"never seen {now}",
            "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1000)}  # fmt: skip
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


def test_an_export_meeting_a_write_locked_store_gets_503_soon_and_the_stop_ends(
    store_path: Path,
) -> None:
    """The first request after the lock was taken opened the interner's connection, whose
    checks each waited out eight busy timeouts, twice: its 503 came after 85 s (an exporter
    gives up after 10 s), every other request waited behind it, and a stop begun meanwhile
    took 84 s, past the 35 s promised. Its interning now waits two busy timeouts (5 s each)."""
    receiver = Receiver(Store(store_path), ReceiverConfig(port=0)).start()
    assert receiver.wait_ready(30)
    holder = sqlite3.connect(store_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    replies: list[Reply] = []
    exporter = threading.Thread(
        target=lambda: replies.append(post(receiver, "/v1/traces", _spans_with_new_strings(), JSON))
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
