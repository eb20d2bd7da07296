"""Ingest rate of ``tracekit collector`` over OTLP/gRPC and OTLP/HTTP (protobuf and JSON) next
to the in-process parse + insert limit, measured in the same run on the same machine.

The receiver runs in its own process (as ``tracekit collector`` would, with its writer child);
the load generator sends pre-encoded 512-span requests (the SDK's default batch) over keep-alive
HTTP connections or gRPC channels from this process, so encoding requests is not counted against
the receiver. gRPC and HTTP protobuf rounds alternate, each with a fresh receiver and store. CPU
per span is the receiver's and its writer process's user + system time (``/proc``) over the run.
The in-process rows are the receiver's own decoder and writer called in one thread.
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
from collections.abc import Callable
from pathlib import Path

import grpc
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


TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TICKS = os.sysconf("SC_CLK_TCK")


def _serve(path: str, port_queue: mp.Queue, stop: mp.Event) -> None:  # type: ignore[type-arg]
    receiver = Receiver(Store(path), ReceiverConfig(port=0, grpc_port=0)).start()
    assert receiver.grpc_address is not None
    port_queue.put((receiver.address[1], receiver.grpc_address[1]))
    stop.wait()
    receiver.stop()


def _cpu_seconds(pid: int) -> float:
    """User + system time of ``pid`` and its children still running (the writer process)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


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


def _http_worker(port: int, content_type: str) -> Callable[[list[bytes]], None]:
    def worker(items: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for body in items:
            conn.request("POST", "/v1/traces", body, {"Content-Type": content_type})
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status

    return worker


def _grpc_worker(port: int) -> Callable[[list[bytes]], None]:
    def worker(items: list[bytes]) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            export = channel.unary_unary(TRACES)
            for body in items:
                export(body, timeout=60)

    return worker


def _send_all(
    worker: Callable[[list[bytes]], None], payloads: list[bytes], connections: int
) -> float:
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


def over_the_wire(total: int, transport: str) -> tuple[float, float]:
    """Spans/s and receiver CPU us/span through a receiver process, from this process.

    ``transport``: "grpc", "http" (protobuf) or "json" (HTTP).
    """
    payloads = _payloads(total, as_json=transport == "json")
    with tempfile.TemporaryDirectory() as tmp:
        port_queue: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        stop = mp.Event()
        server = mp.Process(target=_serve, args=(str(Path(tmp) / "s.db"), port_queue, stop))
        server.start()
        http_port, grpc_port = port_queue.get(timeout=30)
        if transport == "grpc":
            worker = _grpc_worker(grpc_port)
        else:
            kind = "application/json" if transport == "json" else "application/x-protobuf"
            worker = _http_worker(http_port, kind)
        cpu_before = _cpu_seconds(server.pid or 0)
        elapsed = _send_all(worker, payloads, connections=CONNECTIONS)
        cpu = _cpu_seconds(server.pid or 0) - cpu_before
        stop.set()
        server.join()
        stored = Store(Path(tmp) / "s.db").count_spans()
    assert stored == total, (stored, total)
    return total / elapsed, cpu / total * 1e6


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
    load_before = os.getloadavg()
    parse, insert, both = in_process(total)
    # Fresh receivers, gRPC and HTTP taking turns: on a shared machine one run can land on a
    # busy moment, and taking turns spreads such moments over both.
    runs: dict[str, list[tuple[float, float]]] = {"grpc": [], "http": []}
    for _ in range(ROUNDS):
        for transport in runs:
            runs[transport].append(over_the_wire(total, transport))
    json_rate, json_cpu = over_the_wire(total // 2, "json")
    header = ("measurement", "spans/s", "receiver CPU us/span")
    wire = f"512-span requests, {CONNECTIONS} connections"
    rows = [
        ("in-process protobuf decode into rows only", f"{parse:,.0f}", ""),
        ("in-process insert only (4,096 rows per transaction)", f"{insert:,.0f}", ""),
        ("in-process decode + insert, one thread", f"{both:,.0f}", ""),
        *_rows("gRPC", wire, runs["grpc"]),
        *_rows("HTTP protobuf", wire, runs["http"]),
        (f"HTTP JSON, {wire}", f"{json_rate:,.0f}", f"{json_cpu:.1f}"),
    ]
    print(machine())
    print(text_table(header, rows))
    print(f"{total:,} spans per run; target >= 40,000 spans/s over gRPC and HTTP protobuf each")
    print(f"load average at the start: {' / '.join(f'{x:.1f}' for x in load_before)}")
    print(f"load average at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")


def _rows(name: str, wire: str, runs: list[tuple[float, float]]) -> list[tuple[str, str, str]]:
    rates = sorted(rate for rate, _ in runs)
    cpus = sorted(cpu for _, cpu in runs)
    return [
        (f"{name}, {wire}: median of {ROUNDS}", f"{rates[ROUNDS // 2]:,.0f}",
         f"{cpus[ROUNDS // 2]:.1f}"),
        (f"{name}: slowest / fastest", f"{rates[0]:,.0f} / {rates[-1]:,.0f}", ""),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
