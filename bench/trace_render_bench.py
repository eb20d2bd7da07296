"""``tracekit trace`` and ``tracekit diff`` of requests of 20,000 spans, in each format.

python -m bench.trace_render_bench [--quick]

The real CLI, in a fresh process each run, reads a real store (built in a private temporary
folder): the times are what a user waits for, reading and reconstruction included. Two kinds of
request: a gateway fanning out to 4,000 calls (each a client, a server and 3 steps) and a chain
of 20,000 spans each calling the next between two hosts (every call enters another clock).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._report import text_table
from tracekit.records import SpanRecord
from tracekit.store import Store

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
SPANS = 20_000
TRACEKIT = str(Path(sys.executable).with_name("tracekit"))


def fan_out(trace: str, correlation_id: str, slower: int) -> list[SpanRecord]:
    """A root and 3,999 calls of 5 spans each; ``slower`` ms more on every third call."""
    root = SpanRecord(trace, f"{1:016x}", None, "gateway", "POST /bulk", "SERVER", T0,
                      T0 + 50_000 * MS, attributes={"correlation.id": correlation_id})  # fmt: skip
    spans = [root]
    for call in range((SPANS - 1) // 5):
        at, first = T0 + 10 * call * MS, len(spans) + 1
        spans.append(SpanRecord(trace, f"{first:016x}", root.span_id, "gateway",
                                f"GET /items/{call}", "CLIENT", at,
                                at + (9 + slower * (call % 3 == 0)) * MS,
                                attributes={"url.path": f"/items/{call}"}))  # fmt: skip
        spans.append(SpanRecord(trace, f"{first + 1:016x}", f"{first:016x}", f"svc-{call % 20}",
                                "GET /items/{id}", "SERVER", at + MS, at + 8 * MS))  # fmt: skip
        spans += [SpanRecord(trace, f"{first + 2 + step:016x}", f"{first + 1:016x}",
                             f"svc-{call % 20}", f"step {step}", "INTERNAL",
                             at + (2 + 2 * step) * MS, at + (3 + 2 * step) * MS,
                             attributes={"db.statement": "SELECT 1"})
                  for step in range(3)]  # fmt: skip
    return spans


def chain(trace: str, correlation_id: str) -> list[SpanRecord]:
    """20,000 spans, each the child of the one before, alternating between two hosts."""
    hosts = [{"service.name": "ping", "host.name": "a"}, {"service.name": "pong", "host.name": "b"}]
    return [SpanRecord(trace, f"{n + 1:016x}", f"{n:016x}" if n else None,
                       hosts[n // 2 % 2]["service.name"], f"GET /{n}",
                       "CLIENT" if n % 2 else "SERVER", T0 + n * MS, T0 + (50_000 - n) * MS,
                       attributes={"correlation.id": correlation_id} if not n else {},
                       resource=hosts[n // 2 % 2])
            for n in range(SPANS)]  # fmt: skip


def build_store(path: Path) -> None:
    with Store(path) as store:
        store.write_spans(fan_out("ab" * 16, "fan-a", 0))
        store.write_spans(fan_out("cd" * 16, "fan-b", 2))
        store.write_spans(chain("ef" * 16, "chain-a"))
        store.write_spans(chain("01" * 16, "chain-b"))


def seconds(store: Path, args: list[str], runs: int) -> float:
    """The median time of ``tracekit ARGS`` over ``runs`` runs, its output thrown away."""
    command = [TRACEKIT, *args, "--store", str(store)]
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "COLUMNS": "120"}, check=False)  # fmt: skip
        samples.append(time.perf_counter() - started)
        if done.returncode not in (0, 1):  # diff exits 1 when the requests differ
            raise SystemExit(f"{' '.join(args)}: {done.stderr.decode()}")
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one run of each (default: 3)")
    runs = 1 if parser.parse_args().quick else 3
    commands = [
        ["trace", "fan-a"],
        ["trace", "chain-a"],
        ["diff", "fan-a", "fan-b"],
        ["diff", "chain-a", "chain-b"],
    ]
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "tracekit.db"
        build_store(store)
        rows = [[" ".join(args[:3])] + [f"{seconds(store, [*args, '--format', f], runs):.2f}"
                                        for f in ("text", "json", "rich")]
                for args in commands]  # fmt: skip
    print(f"Requests of {SPANS:,} spans, median of {runs} run(s), seconds\n")
    print(text_table(["command", "text", "json", "rich"], rows))


if __name__ == "__main__":
    main()
