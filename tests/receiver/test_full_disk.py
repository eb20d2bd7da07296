"""``tracekit collector`` on a disk that fills up: clients hear 503, the log is not flooded."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tests.receiver._collector_process import start_collector

from tracekit.store import Store


def _request(spans: int) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    now = time.time_ns()
    for _ in range(spans):
        span = scope.spans.add()
        span.trace_id, span.span_id, span.name = os.urandom(16), os.urandom(8), "GET /"
        span.start_time_unix_nano = span.end_time_unix_nano = now
        attribute = span.attributes.add()
        attribute.key, attribute.value.string_value = "payload", os.urandom(2000).hex()
    return request.SerializeToString()


def test_a_full_disk_is_said_once_not_once_per_request(tmp_path: Path) -> None:
    """Every request failed alike, and each one wrote a "write failed" line: steady traffic on
    a full disk flooded the collector's log (which may well be on that disk)."""
    process, port = start_collector(tmp_path / "full.db", file_bytes=400_000)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    statuses = []
    for _ in range(30):
        conn.request("POST", "/v1/traces", _request(20), {"Content-Type": "application/x-protobuf"})
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
    conn.close()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)

    assert statuses[0] == 200 and statuses.count(503) > 10  # the client is told to retry
    assert stderr.count("write failed") == 1, stderr
    assert "disk I/O error" in stderr  # EFBIG: SQLite says "database or disk is full" for ENOSPC


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs holding a store, then filled up (needs root to mount)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                             capture_output=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        with Store(disk / "t.db") as store:
            store.create()
        with (disk / "filler").open("wb") as filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


@pytest.mark.parametrize("named", ["as it is", "through a symbolic link elsewhere"])
def test_a_collector_started_on_a_full_disk_says_so(
    full_disk: Path, tmp_path: Path, named: str
) -> None:
    """Before: 'cannot open store PATH: disk I/O error' (SQLite could not make the -shm file),
    which reads as failing hardware; also for a store named through a link on another disk,
    where SQLite writes beside the file the link names."""
    store = full_disk / "t.db"
    if named != "as it is":
        store = tmp_path / "link.db"
        store.symlink_to(full_disk / "t.db")
    result = subprocess.run(
        [sys.executable, "-c", "from tracekit_cli.main import main; main()", "collector",
         "--store", str(store), "--port", "0", "--grpc-port", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 2
    assert (
        result.stderr == f"tracekit collector: cannot open store {store}: No space left on device\n"
    )
