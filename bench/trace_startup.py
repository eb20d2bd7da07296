"""`tracekit trace ID` from process start to exit on a 1,000,000-span store.

Compared in the same run with the floor `python -c "import click, rich.table, sqlite3, json"`
(what any click + rich + SQLite tool pays before doing anything). Target: at most 1.5x that floor.

    python -m bench.trace_startup [--spans 1000000] [--runs 15] [--store PATH] [--uncached]

The store is built once (about a minute for a million spans) and reused from
~/.cache/tracekit-bench/tracekit-bench-1000000-v2.db on later runs.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench._report import private_cache
from tracekit.records import SpanRecord
from tracekit.store import Store

T0 = 1_700_000_000_000_000_000
SPANS_PER_REQUEST = 20
SERVICES = [f"svc-{i}" for i in range(12)]


def request_spans(n: int, rng: random.Random) -> list[SpanRecord]:
    """One request of SPANS_PER_REQUEST spans: a root and CLIENT/SERVER pairs below it."""
    trace_id = f"{rng.getrandbits(128):032x}"
    start = T0 + n * 1_000_000
    root = SpanRecord(trace_id, f"{rng.getrandbits(64):016x}", None, "gateway", "GET /api",
                      "SERVER", start, start + 50_000_000,
                      attributes={"correlation.id": f"bench-{n}"})  # fmt: skip
    spans = [root]
    for i in range(SPANS_PER_REQUEST // 2):
        service = SERVICES[(n + i) % len(SERVICES)]
        t = start + (i + 1) * 2_000_000
        client = SpanRecord(trace_id, f"{rng.getrandbits(64):016x}", root.span_id, "gateway",
                            f"GET /{service}", "CLIENT", t, t + 1_500_000,
                            attributes={"correlation.id": f"bench-{n}"})  # fmt: skip
        server = SpanRecord(trace_id, f"{rng.getrandbits(64):016x}", client.span_id, service,
                            f"GET /{service}", "SERVER", t + 100_000, t + 1_400_000,
                            attributes={"correlation.id": f"bench-{n}"})  # fmt: skip
        spans += [client, server]
    return spans[:SPANS_PER_REQUEST]


def build_store(path: Path, total: int) -> None:
    rng = random.Random(7)
    batch: list[SpanRecord] = []
    with Store(path) as store:
        for n in range(total // SPANS_PER_REQUEST):
            batch += request_spans(n, rng)
            if len(batch) >= 20_000:
                store.write_spans(batch)
                batch = []
        if batch:
            store.write_spans(batch)


def child_env(uncached: bool = False) -> dict[str, str]:
    """The environment of the timed processes: bytecode cached, as an installed package runs.

    ``pip install`` compiles every module to bytecode; an editable checkout with
    ``PYTHONDONTWRITEBYTECODE=1`` (as on the development machines) recompiles tracekit's sources
    on every start, which would time the compiler. The cache lives in a private directory (see
    ``private_cache``), so the checkout gets no ``__pycache__``, and a warm-up run fills it.
    """
    env = {**os.environ, "COLUMNS": "120"}
    if uncached:  # --uncached: the environment as it is (sources recompiled if it says so)
        return env
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(private_cache("pycache"))
    return env


def timed(command: list[str], runs: int, env: dict[str, str]) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (user + system of the child) seconds per run, after one warm-up.

    CPU time is reported too because on a shared 2-core machine wall time mostly measures the
    neighbours; compare the CPU ratio when the machine is busy.
    """
    walls, cpus = [], []
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--store", type=Path)
    parser.add_argument(
        "--uncached",
        action="store_true",
        help="keep the environment's bytecode settings (PYTHONDONTWRITEBYTECODE)",
    )
    parser.add_argument("--quick", action="store_true", help="100,000 spans and 5 runs")
    args = parser.parse_args()
    if args.quick:  # `python -m bench --quick` passes it to every benchmark
        args.spans, args.runs = min(args.spans, 100_000), min(args.runs, 5)
    path = args.store or private_cache(f"tracekit-bench-{args.spans}-v2.db")
    if not path.exists():
        print(f"building {args.spans:,} spans into {path} ...", flush=True)
        started = time.perf_counter()
        build_store(path, args.spans)
        print(f"built in {time.perf_counter() - started:.1f} s", flush=True)
    with Store(path) as store:
        count = store.count_spans()
    middle = f"bench-{count // SPANS_PER_REQUEST // 2}"
    tracekit = str(Path(sys.executable).with_name("tracekit"))
    floor_cmd = [sys.executable, "-c", "import click, rich.table, sqlite3, json"]
    env = child_env(args.uncached)
    rows = [
        ("floor: import click, rich.table, sqlite3, json", timed(floor_cmd, args.runs, env)),
    ]
    for fmt in ("text", "json", "rich"):
        command = [tracekit, "trace", middle, "--store", str(path), "--format", fmt]
        rows.append((f"tracekit trace ID --format {fmt}", timed(command, args.runs, env)))
    floor_wall = statistics.median(rows[0][1][0])
    floor_cpu = statistics.median(rows[0][1][1])
    print(f"\nstore: {count:,} spans; request {middle}; {args.runs} runs each (medians)\n")
    print(f"{'command':<46} {'wall ms':>8} {'x floor':>8} {'cpu ms':>8} {'x floor':>8}")
    for name, (walls, cpus) in rows:
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        print(
            f"{name:<46} {wall * 1000:>8.1f} {wall / floor_wall:>8.2f} "
            f"{cpu * 1000:>8.1f} {cpu / floor_cpu:>8.2f}"
        )


if __name__ == "__main__":
    main()
