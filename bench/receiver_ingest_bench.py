"""Ingest rate of ``tracekit collector`` over HTTP (protobuf and JSON) next to the in-process
parse + insert limit, measured in the same run on the same machine.

The receiver runs in its own process (as ``tracekit collector`` would, with its writer child);
the load generator sends pre-encoded 512-span requests (the SDK's default batch) over keep-alive
connections from this process, so encoding requests is not counted against the receiver. The
in-process rows are the receiver's own decoder and writer called in one thread, without HTTP.
Run: ``python -m bench.receiver_ingest_bench`` (``--quick`` for a short run).
"""

from __future__ import annotations

import http.client
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from google.protobuf.json_format import MessageToJson

from bench._report import machine, text_table
from bench._store_data import otlp_request, typical_spans
from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.receiver._protobuf_spans import SpanRowDecoder
from tracekit.store import Store
from tracekit.store._rows import SpanRows

BATCH = 512
# Eight services exporting at once, each with the SDK's one request in flight at a time.
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "8"))
ROUNDS = 3


def _serve(path: str, port_queue: mp.Queue, stop: mp.Event) -> None:  # type: ignore[type-arg]
    receiver = Receiver(Store(path), ReceiverConfig(port=0)).start()
    port_queue.put(receiver.address[1])
    stop.wait()
    receiver.stop()


def _payloads(total: int, as_json: bool) -> list[bytes]:
    spans = typical_spans(total, seed=11)
    out = []
    for start in range(0, total, BATCH):
        request = otlp_request(spans[start : start + BATCH])
        out.append(_otlp_json(request) if as_json else request.SerializeToString())
    return out


def _otlp_json(request: object) -> bytes:
    """OTLP/JSON: proto3 JSON with hex ids (MessageToJson writes ids as base64)."""
    import base64
    import json

    doc = json.loads(MessageToJson(request))  # type: ignore[arg-type]
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(doc).encode()


def _send_all(port: int, payloads: list[bytes], content_type: str, connections: int) -> float:
    def worker(items: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for body in items:
            conn.request("POST", "/v1/traces", body, {"Content-Type": content_type})
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status

    threads = [
        threading.Thread(target=worker, args=(payloads[i::connections],))
        for i in range(connections)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def over_http(total: int, as_json: bool) -> float:
    """Spans/s through a receiver process, from a client in this process."""
    payloads = _payloads(total, as_json)
    with tempfile.TemporaryDirectory() as tmp:
        port_queue: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        stop = mp.Event()
        server = mp.Process(target=_serve, args=(str(Path(tmp) / "s.db"), port_queue, stop))
        server.start()
        port = port_queue.get(timeout=30)
        kind = "application/json" if as_json else "application/x-protobuf"
        elapsed = _send_all(port, payloads, kind, connections=CONNECTIONS)
        stop.set()
        server.join()
        stored = Store(Path(tmp) / "s.db").count_spans()
    assert stored == total, (stored, total)
    return total / elapsed


def in_process(total: int) -> tuple[float, float, float]:
    """Spans/s for protobuf decoding into rows alone, inserting alone, and both, in one thread.

    This is the receiver's own code path (``SpanRowDecoder`` then the store's writer), without
    HTTP and without the writer process: the most one Python thread can do.
    """
    payloads = _payloads(total, as_json=False)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "s.db")
        store.create()
        decoder = SpanRowDecoder(store.encoder)
        started = time.perf_counter()
        decoded = [decoder.decode(body).rows for body in payloads]
        parse = time.perf_counter() - started
        started = time.perf_counter()
        for start in range(0, len(decoded), 8):
            rows = SpanRows()
            for request in decoded[start : start + 8]:
                rows.extend(request)
            store.write_rows(rows)
        insert = time.perf_counter() - started
        assert store.count_spans() == total
        store.close()
    return total / parse, total / insert, total / (parse + insert)


def main() -> None:
    quick = "--quick" in sys.argv
    total = 50 * BATCH if quick else 400 * BATCH
    parse, insert, both = in_process(total)
    # Three fresh receivers: on a shared machine one run can land on a busy moment.
    protobuf = sorted(over_http(total, as_json=False) for _ in range(ROUNDS))
    json_rate = over_http(total // 2, as_json=True)
    header = ("measurement", "spans/s")
    http = f"512-span requests, {CONNECTIONS} connections"
    rows = [
        ("in-process protobuf decode into rows only", f"{parse:,.0f}"),
        ("in-process insert only (4,096 rows per transaction)", f"{insert:,.0f}"),
        ("in-process decode + insert, one thread", f"{both:,.0f}"),
        (f"HTTP protobuf, {http}: median of {ROUNDS}", f"{protobuf[ROUNDS // 2]:,.0f}"),
        (f"HTTP protobuf, {http}: slowest / fastest", f"{protobuf[0]:,.0f} / {protobuf[-1]:,.0f}"),
        (f"HTTP JSON, {http}", f"{json_rate:,.0f}"),
    ]
    print(machine())
    print(text_table(header, rows))
    print(f"{total:,} spans per run; target >= 40,000 spans/s over HTTP protobuf")
    print(f"load average at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
