"""``tracekit services``, ``trace`` and ``diff`` against a Tempo and a Jaeger 50 ms away.

python -m bench.backend_read_bench [--quick]

No Tempo or Jaeger can run here: the fakes of ``tests/backends`` (WSGI apps answering in the
servers' real encodings) are served on loopback by uvicorn, which keeps connections open as Go's
server does, each request held ``--latency`` ms first, as a backend across a network would. The
real CLI runs in a fresh process against 100 traces; the table shows its wall time and how many
TCP connections
the server accepted (one per request without keep-alive).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench._report import text_table

ROOT = Path(__file__).resolve().parent.parent
for folder in ("tests/support", "tests/backends"):
    sys.path.insert(0, str(ROOT / folder))

from jaeger_fake import FakeJaeger  # noqa: E402
from otlp_fixtures import recent  # noqa: E402
from tempo_fake import FakeTempo  # noqa: E402

from conftest import KeepAliveBackend  # noqa: E402 -- the test helpers are found through sys.path
from tracekit.records import SpanRecord  # noqa: E402

TRACEKIT = str(Path(sys.executable).with_name("tracekit"))
TRACES = 100
MS = 1_000_000


def requests(count: int) -> list[SpanRecord]:
    """``count`` traces of three spans, gateway -> orders, one correlation ID each but the last
    half, which share ``shared`` (one request that began many traces), version 1 or 2."""
    spans = []
    for n in range(count):
        trace, at = f"{n + 1:032x}", n * 10 * MS
        cid = f"req-{n}" if n < count // 2 else "shared"
        attributes = {"correlation.id": cid, "http.route": "/orders"}
        resource = {"service.name": "gateway", "service.version": f"v{n % 2 + 1}"}
        spans += [
            SpanRecord(trace, f"{3 * n + 1:016x}", None, "gateway", "POST /orders", "SERVER",
                       at, at + 9 * MS, attributes=attributes, resource=resource,
                       service_version=resource["service.version"]),
            SpanRecord(trace, f"{3 * n + 2:016x}", f"{3 * n + 1:016x}", "gateway",
                       "POST", "CLIENT", at + MS, at + 8 * MS, attributes=attributes),
            SpanRecord(trace, f"{3 * n + 3:016x}", f"{3 * n + 2:016x}", "orders",
                       "POST /orders", "SERVER", at + 2 * MS, at + 7 * MS,
                       attributes=attributes),
        ]  # fmt: skip
    return recent(spans)


def run(url_option: str, url: str, args: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run([TRACEKIT, *args, url_option, url, "--format", "json"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
                          env={**os.environ, "TRACEKIT_BACKEND_HEADERS": ""})  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"tracekit {' '.join(args)}: {done.stderr.decode()[-300:]}")
    return elapsed, done.returncode


COMMANDS = {
    "services --since 1h": ["services", "--since", "1h"],
    "trace shared (50 traces)": ["trace", "shared"],
    "diff --service gateway (set form)": [
        "diff", "--service", "gateway", "--a", "service.version=v1", "--b",
        "service.version=v2", "--since", "1h",
    ],
}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one run each, not three")
    parser.add_argument("--latency", type=float, default=50.0, help="ms per request")
    options = parser.parse_args()
    runs = 1 if options.quick else 3
    spans = requests(TRACES)
    rows = []
    for name, option, fake in (("Tempo", "--tempo", FakeTempo), ("Jaeger", "--jaeger", FakeJaeger)):
        backend = KeepAliveBackend(fake(spans), options.latency / 1000)
        try:
            for label, args in COMMANDS.items():
                backend.connections.clear()
                times = [run(option, backend.url, args)[0] for _ in range(runs)]
                made = len(backend.connections) // runs
                rows.append([name, label, f"{statistics.median(times):.2f} s", str(made)])
        finally:
            backend.close()
    print(f"{TRACES} traces, {options.latency:g} ms a request, median of {runs} run(s)")
    print(text_table(["backend", "command", "wall time", "connections"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
