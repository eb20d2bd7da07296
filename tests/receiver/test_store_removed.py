"""A store file removed (or replaced) under a running receiver: exporters hear 503, and the
collector's log says why, instead of 200s for records that go into a file no one can open."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
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
