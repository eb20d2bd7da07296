"""CPU per span of writing into the embedded store, in one process, by part:

- ``write``: ``Store.write`` of typical span records (512 per call) into a fresh store, what a
  service exporting with ``TRACEKIT_EXPORTER=store`` pays: encoding (interning first) and insert;
- ``encode``: encoding the same records again (every string interned): the encoder alone;
- ``logs``: ``Store.write`` of log records (512 per call, eight per request, each with its
  trace, span and correlation id), what the collector's writer process does with OTLP logs;
- ``insert``: ``Store.write_rows`` of rows decoded from OTLP requests (4,096 per transaction),
  what the collector's writer process does, into a fresh store and, with ``--big STORE``, into
  a copy of that store (``bench.store_size_bench`` builds one of 1M spans).

CPU time (``time.process_time``) of a process of its own per round, so other work on a shared
machine moves the numbers less than wall time would. ``--against TREE`` takes turns, round by
round, with the tracekit of another checkout (its ``src/``) on the same payloads, and prints
both and their ratio: compare trees only within one run.
Run: ``python -m bench.store_write_bench [--against /path/to/other/checkout] [--big STORE]``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench._report import machine, text_table
from bench._store_data import otlp_request, typical_spans
from tracekit.receiver._protobuf_spans import SpanRowDecoder
from tracekit.records import LogRecordData
from tracekit.store import Store
from tracekit.store._rows import SpanRows

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SPANS = 20_480
BATCH = 512
ROWS_PER_WRITE = 4_096
PARTS = ("write", "encode", "logs", "insert", "insert_big")


def one_round(big: str | None) -> dict[str, float]:
    """µs of CPU per span of each part, measured in this process with the tracekit it imports."""
    spans = typical_spans(SPANS, seed=11)
    batches = [spans[i : i + BATCH] for i in range(0, SPANS, BATCH)]
    requests = [otlp_request(batch).SerializeToString() for batch in batches]
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "records.db")
        store.create()
        out["write"] = _cpu_per_span(lambda: [store.write(batch, []) for batch in batches])
        out["encode"] = _cpu_per_span(lambda: [store.encoder.encode(batch) for batch in batches])
        store.close()
        store = Store(Path(tmp) / "logs.db")
        store.create()
        logs = typical_logs(SPANS)
        out["logs"] = _cpu_per_span(
            lambda: [store.write([], logs[i : i + BATCH]) for i in range(0, SPANS, BATCH)]
        )
        store.close()
        out["insert"] = _insert(Path(tmp) / "rows.db", requests)
        if big:
            shutil.copy(big, Path(tmp) / "big.db")
            out["insert_big"] = _insert(Path(tmp) / "big.db", requests)
    return out


def typical_logs(count: int) -> list[LogRecordData]:
    """``count`` log lines, eight per request, as an instrumented service writes them."""
    rng = random.Random(3)
    resource = {"service.name": "orders", "host.name": "h1", "process.pid": 42}
    out = []
    for n in range(count):
        if n % 8 == 0:
            trace_id, correlation = f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(128):032x}"
        out.append(LogRecordData(
            1_765_000_000_000_000_000 + n * 1_000, "orders", "INFO", 9,
            f"handled order {rng.randrange(10**6)} in {rng.randrange(100)} ms", trace_id,
            f"{rng.getrandbits(64) | 1:016x}",
            {"correlation.id": correlation, "logger.name": "orders.api", "code.lineno": n % 8},
            resource,
        ))  # fmt: skip
    return out


def _insert(path: Path, requests: list[bytes]) -> float:
    """µs of CPU per span of ``Store.write_rows`` of the rows ``requests`` decode into."""
    store = Store(path)
    store.create()
    decoder = SpanRowDecoder(store.encoder)
    writes = []
    for start in range(0, len(requests), ROWS_PER_WRITE // BATCH):
        rows = SpanRows()
        for body in requests[start : start + ROWS_PER_WRITE // BATCH]:
            rows.extend(decoder.decode(body).rows)
        writes.append(rows)
    cpu = _cpu_per_span(lambda: [store.write_rows(rows) for rows in writes])
    store.close()
    return cpu


def _cpu_per_span(work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return (time.process_time() - started) / SPANS * 1e6


def _round_in(tree: Path, big: str | None) -> dict[str, float]:
    """One round in a fresh interpreter importing tracekit from ``tree``/src."""
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{ROOT}"}
    command = [sys.executable, "-m", "bench.store_write_bench", "--round"]
    command += ["--big", big] if big else []
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


def _option(name: str) -> str | None:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None


def main() -> None:
    big = _option("--big")
    if "--round" in sys.argv:
        print(json.dumps(one_round(big)))
        return
    against = _option("--against")
    trees = {"this tree": ROOT, **({"--against": Path(against).resolve()} if against else {})}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    load_before = os.getloadavg()
    for _ in range(ROUNDS):
        for name, tree in trees.items():  # taking turns: a busy moment hits both
            results[name].append(_round_in(tree, big))
    header = ("us of CPU per span (median of rounds)", *trees, *(("ratio",) if against else ()))
    rows = []
    for part in PARTS:
        if part not in results["this tree"][0]:
            continue
        medians = [statistics.median(r[part] for r in results[name]) for name in trees]
        ratio = (f"{medians[0] / medians[1]:.2f}",) if against else ()
        rows.append((part, *(f"{m:.2f}" for m in medians), *ratio))
    print(machine())
    print(text_table(header, rows))
    print(f"{ROUNDS} rounds of {SPANS:,} spans; load average at the start / end:"
          f" {load_before[0]:.1f} / {os.getloadavg()[0]:.1f}")  # fmt: skip
    if against:
        print(f"--against: {trees['--against']}")


if __name__ == "__main__":
    main()
