"""A commit slower than the handler's wait: an exporter that retries on 503 stores its records
exactly once (logs have no id the store could deduplicate them by)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from tests.receiver.conftest import Reply, post

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store

# The lock is held until an exporter has been answered 503 (the handler waited 0.5 s), and at
# most this long: shorter than SQLite's busy timeout (5 s). A fixed time could pass, on a
# loaded machine, before any exporter's request arrived, and then nothing waited.
LOCK_HELD_AT_MOST_S = 4.5


def _logs(body: str) -> bytes:
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.time_unix_nano, record.body.string_value = time.time_ns(), body
    return request.SerializeToString()


def _export_with_retries(
    receiver: Receiver, body: bytes, replies: list[int], refused: threading.Event
) -> Reply:
    """What an OTLP exporter does: retry on 503 until the records are acknowledged."""
    for _ in range(50):
        reply = post(receiver, "/v1/logs", body)
        replies.append(reply.status)
        if reply.status != 503:
            return reply
        refused.set()
        time.sleep(0.2)
    raise AssertionError("never acknowledged")


@pytest.fixture
def receiver(store_path: Path) -> Iterator[Receiver]:
    # One record per transaction: the writer takes one request's records at a time and holds
    # at most two batches in flight, so the third request waits in the queue, where it can be
    # withdrawn and answered 503. With larger batches, requests arriving together were taken
    # in one batch behind the lock and waited it out with 200: no exporter was refused.
    config = ReceiverConfig(port=0, commit_timeout=0.5, batch_size=1)
    started = Receiver(Store(store_path), config)
    started.start()
    yield started
    started.stop()


def _hold_write_lock(store_path: Path, until: threading.Event) -> threading.Thread:
    """Another process's long write transaction: every commit waits behind it."""
    conn = sqlite3.connect(store_path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")

    def release() -> None:
        until.wait(LOCK_HELD_AT_MOST_S)
        conn.execute("ROLLBACK")
        conn.close()

    holder = threading.Thread(target=release)
    holder.start()
    return holder


def test_a_log_batch_retried_after_a_slow_commit_is_stored_once(
    receiver: Receiver, store_path: Path
) -> None:
    """Before: the handler answered 503 after 0.5 s, the batch was committed anyway once the
    lock went, and the exporter's retry stored every log record a second time."""
    # The file and schema exist. The writer process may still be starting (over 0.5 s on a
    # loaded machine): the warm-up is then answered 503 and, as by any exporter, sent again.
    warm_up = _export_with_retries(receiver, _logs("warm-up"), [], threading.Event())
    assert warm_up.status == 200, warm_up
    refused = threading.Event()
    holder = _hold_write_lock(store_path, refused)
    replies: list[list[int]] = [[], [], []]
    exporters = [
        threading.Thread(
            target=_export_with_retries, args=(receiver, _logs(f"l{n}"), replies[n], refused)
        )
        for n in range(3)
    ]
    for exporter in exporters:
        exporter.start()
    for thread in [*exporters, holder]:
        thread.join()

    assert any(503 in r for r in replies), replies  # some did wait past the handler's limit
    assert all(r[-1] == 200 for r in replies), replies
    with Store(store_path) as reader:
        assert reader.count_logs() == 4, replies
