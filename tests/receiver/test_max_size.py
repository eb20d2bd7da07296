"""``--max-size`` holds against data made to break it: 100,000 spans whose names and attribute
keys are all unique, through a receiver in its own process (retention every half second)."""

from __future__ import annotations

import http.client
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conditions import wait_for
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tests.receiver._collector_process import tree_rss

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Retention, Store

MB = 1_000_000
SERVE = textwrap.dedent(
    """
    import sys
    from tracekit.receiver import Receiver, ReceiverConfig
    from tracekit.store import Retention, Store

    config = ReceiverConfig(
        port=0, retention=Retention(max_bytes=5_000_000), retention_interval=0.5
    )
    receiver = Receiver(Store(sys.argv[1]), config).start()
    print(receiver.address[1], flush=True)
    sys.stdin.readline()
    receiver.stop()
    """
)


def _request(first: int, count: int) -> bytes:
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.add(key="service.name").value.string_value = "unique"
    scope = resource.scope_spans.add()
    now = time.time_ns()
    for n in range(first, first + count):
        span = scope.spans.add(name=f"op-{n}", start_time_unix_nano=now, end_time_unix_nano=now)
        span.trace_id, span.span_id = n.to_bytes(16, "big"), n.to_bytes(8, "big")
        span.attributes.add(key=f"key-{n}").value.string_value = f"v{n}"
    return request.SerializeToString()


def _export(conn: http.client.HTTPConnection, body: bytes) -> int:
    """Send as an OTLP exporter does, retrying while answered 503 (a commit that waited too
    long on a loaded machine): the status it ends with."""
    for _ in range(30):
        conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
        response = conn.getresponse()
        response.read()
        if response.status != 503:
            return response.status
        time.sleep(float(response.getheader("Retry-After") or 1))
    return 503


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_unique_names_and_keys_stay_within_max_size(tmp_path: Path) -> None:
    path = tmp_path / "max.db"
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    port = int(process.stdout.readline())
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sizes, rss = [], []
    for first in range(1, 100_001, 500):
        assert _export(conn, _request(first, 500)) == 200
        sizes.append(path.stat().st_size)
        rss.append(tree_rss(process.pid))
    conn.close()
    # the last retention passes (every 0.5 s) take it under its limit within 2 s
    wait_for(lambda: path.stat().st_size <= 5 * MB, 2.0, "the store under 5 MB")
    final = path.stat().st_size
    process.stdin.write("\n")
    process.stdin.close()
    assert process.wait(60) == 0
    with Store(path) as store:
        kept = store.count_spans()
        newest = store.spans_since(0, limit=100_000)[-1]
    assert final <= 5 * MB, f"{final / MB:.1f} MB"
    assert max(sizes) <= 5 * MB + 4 * MB, f"{max(sizes) / MB:.1f} MB"  # plus what one pass lets in
    assert kept > 10_000 and newest.name == "op-100000"  # the newest are kept, and read right
    assert newest.attributes == {"key-100000": "v100000"}
    grown = (rss[-1] - rss[len(rss) // 5]) / 2**20
    assert grown < 25, f"RSS grew {grown:.0f} MiB from 20k to 100k spans"


def test_a_store_past_its_max_size_is_cut_back_within_seconds_not_at_the_next_minute(
    tmp_path: Path,
) -> None:
    """Retention passes run every minute; between two, a busy collector took a 10 MB store to
    66 MB (and its WAL to 68 MB) in 20 s, and it stayed there until the next pass. A store past
    its limit now starts a pass within about a second."""
    path = tmp_path / "max.db"
    config = ReceiverConfig(port=0, retention=Retention(max_bytes=5 * MB))
    with Receiver(Store(path), config) as receiver:
        conn = http.client.HTTPConnection(*receiver.address, timeout=60)
        sizes = []
        for first in range(1, 60_001, 2000):  # about 13 MB of spans
            assert _export(conn, _request(first, 2000)) == 200
            sizes.append(path.stat().st_size)
        conn.close()
        deadline = time.monotonic() + 10
        while path.stat().st_size > 5 * MB and time.monotonic() < deadline:
            time.sleep(0.2)
        shrunk = path.stat().st_size
    assert shrunk <= 5 * MB, f"{sizes[-1] / MB:.1f} MB, still {shrunk / MB:.1f} MB 10 s later"
