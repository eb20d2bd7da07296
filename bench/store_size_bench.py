"""Bytes per span on disk and lookup latency by correlation id and by trace id at 1,000,000 spans.

Spans are "typical": ten attributes as an HTTP hop carries them (see ``bench/_store_data.py``),
eight spans per request sharing a trace id and a correlation id. Lookups return the whole
request (eight decoded ``SpanRecord``s), which is what ``tracekit trace`` asks for.
Run: ``python -m bench.store_size_bench`` (``--quick``: 100,000 spans).
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench._report import machine, text_table
from bench._store_data import typical_spans
from tracekit.store import Store


def fill(store: Store, total: int) -> tuple[float, list[str], list[str]]:
    """Write ``total`` spans; returns seconds taken and sample correlation and trace ids."""
    correlations: list[str] = []
    traces: list[str] = []
    elapsed = 0.0
    for seed in range(0, total, 20_000):
        spans = typical_spans(min(20_000, total - seed), seed=seed)
        correlations.append(str(spans[0].attributes["correlation.id"]))
        traces.append(spans[-1].trace_id)
        started = time.perf_counter()
        for start in range(0, len(spans), 5_000):
            store.write_spans(spans[start : start + 5_000])
        elapsed += time.perf_counter() - started
    return elapsed, correlations, traces


def file_bytes(path: Path) -> int:
    """Size of the database after a full checkpoint (the WAL folded in)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path.stat().st_size


def latencies_ms(lookup: object, keys: list[str], rounds: int = 2000) -> tuple[float, float]:
    """p50 and p99 of ``lookup(key)`` over ``rounds`` random keys, in milliseconds."""
    rng = random.Random(5)
    samples = []
    for _ in range(rounds):
        key = rng.choice(keys)
        started = time.perf_counter()
        found = lookup(key)  # type: ignore[operator]
        samples.append((time.perf_counter() - started) * 1000)
        assert found, key
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def elapsed_ms(search: object, expected: int = 0) -> float:
    """Milliseconds one ``search()`` took, checking it found ``expected`` requests."""
    started = time.perf_counter()
    found = search()  # type: ignore[operator]
    assert len(found) == expected, len(found)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    total = 100_000 if "--quick" in sys.argv else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        store = Store(path)
        seconds, correlations, traces = fill(store, total)
        store.close()
        size = file_bytes(path)
        reader = Store(path)
        by_corr = latencies_ms(reader.spans_by_correlation_id, correlations)
        by_trace = latencies_ms(lambda t: reader.spans_by_trace_ids([t]), traces)
        recent = latencies_ms(lambda _: reader.recent_requests(limit=20), ["x"], rounds=200)
        # filters nothing matches: search reads every entry point (the worst case)
        scan_ms = elapsed_ms(lambda: reader.recent_requests(min_duration_ms=10**9, limit=20))
        errors_ms = elapsed_ms(lambda: reader.recent_requests(errors_only=True, limit=20))
        # a filter most requests pass (each lasts 0.1 to 70 ms): the newest ones answer it
        most_ms = elapsed_ms(lambda: reader.recent_requests(min_duration_ms=1, limit=20), 20)
    header = ("measurement", "value", "target")
    rows = [
        ("spans stored", f"{total:,}", ""),
        ("in-process insert rate (5,000-span batches)", f"{total / seconds:,.0f} spans/s", ""),
        ("bytes per span on disk (10 attributes)", f"{size / total:.0f}", "<= 250"),
        (
            "lookup by correlation p50 / p99",
            f"{by_corr[0]:.2f} / {by_corr[1]:.2f} ms",
            "p99 < 5 ms",
        ),
        ("lookup by trace id p50 / p99", f"{by_trace[0]:.2f} / {by_trace[1]:.2f} ms", "p99 < 5 ms"),
        ("recent_requests(limit=20) p50 / p99", f"{recent[0]:.2f} / {recent[1]:.2f} ms", ""),
        ("recent_requests, min_duration matching nothing", f"{scan_ms:,.0f} ms", ""),
        ("recent_requests, errors_only, no error stored", f"{errors_ms:,.0f} ms", ""),
        ("recent_requests, min_duration most requests pass", f"{most_ms:,.1f} ms", ""),
    ]
    print(machine())
    print(text_table(header, rows))


if __name__ == "__main__":
    main()
