"""A store file removed (or replaced) under a running receiver: exporters hear 503, and the
collector's log says why, instead of 200s for records that go into a file no one can open."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tests.receiver._collector_process import start_collector
from tests.receiver.conftest import post

from tracekit.receiver import Receiver


def _request() -> bytes:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(name="GET /")
    span.trace_id, span.span_id = os.urandom(16), os.urandom(8)
    span.start_time_unix_nano = span.end_time_unix_nano = time.time_ns()
    return request.SerializeToString()


def _remove_store(path: Path) -> None:
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        (path.parent / name).unlink(missing_ok=True)


def test_a_removed_store_is_a_retryable_error_said_on_the_log(
    receiver: Receiver, store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: 200 for every later export, each written into the deleted file (lost when the
    collector stopped, its disk space held till then) while ``tracekit trace`` said there was
    no store."""
    assert post(receiver, "/v1/traces", _request()).status == 200
    _remove_store(store_path)

    with caplog.at_level(logging.WARNING, logger="tracekit.receiver"):
        reply = post(receiver, "/v1/traces", _request())

    assert (reply.status, reply.headers.get("retry-after")) == (503, "5")
    assert "was removed or replaced" in caplog.text
    assert "restart the collector or service" in caplog.text


def test_the_log_line_of_a_removed_store_sends_no_escape_sequence_to_the_terminal() -> None:
    """The store's folder named with an OSC 8 hyperlink, a bell and a bidi override (as the
    listening line shows it: escaped): the collector's warning that the store was removed wrote
    the path raw, so the terminal running it drew a link and rang; it is written escaped there
    too. (A short folder: the warning keeps 200 characters, the path at their end.)"""
    with tempfile.TemporaryDirectory(prefix="tk") as short:
        folder = Path(short) / "spans\x1b]8;;mailto:a@example.invalid\x07link\x1b]8;;\x07\u202e"
        folder.mkdir()
        store_path = folder / "tracekit.db"
        process, port = start_collector(store_path)
        try:
            assert _post(port, _request()) == 200
            _remove_store(store_path)
            assert _post(port, _request()) == 503
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)

    assert "was removed or replaced" in stderr, stderr
    assert "spans\\x1b]8;;" in stderr, stderr
    assert all(char.isprintable() for char in stderr.replace("\n", "")), repr(stderr)


def _post(port: int, body: bytes) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
        return conn.getresponse().status
    finally:
        conn.close()
