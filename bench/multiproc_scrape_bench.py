"""What a scrape costs in multiprocess mode once many workers have exited.

A real worker process records 90 HTTP server series (30 routes, 3 status codes) through
tracekit's middleware metrics in prometheus-client's multiprocess mode, then exits; its file is
copied under the numbers of N exited workers, as gunicorn's ``--max-requests`` leaves them.
"Every file merged" is what each scrape did before the files were folded (prometheus-client's
reader over the whole directory); "first scrape" is tracekit's exposition, which folds the
exited workers' files into one as it begins, and "next scrape" each one after it.

    python -m bench.multiproc_scrape_bench          # rewrites docs/benchmarks.md's section
    python -m bench.multiproc_scrape_bench --quick  # a smoke run; prints only
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from time import perf_counter

from bench._report import machine, markdown_table, replace_section, text_table

SECTION = "Multiprocess scrapes after recycled workers"
NO_PROCESS = 4_200_000  # above the largest process ID Linux gives (4,194,304)

_WORKER = """
from tracekit.metrics import HttpServerMetrics
metrics = HttpServerMetrics.get("orders", "1.0")
for number in range(90):
    metrics.request_started()
    status = (200, 404, 500)[number // 30]
    metrics.request_finished("GET", f"/orders/{number % 30}/{{id}}", status, 0.02, None)
"""


def _exited_workers(directory: Path, count: int) -> None:
    """``count`` exited workers' histogram files in ``directory``, each of 90 series."""
    source = directory / "source"
    source.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(source)}
    subprocess.run([sys.executable, "-c", _WORKER], env=env, check=True, timeout=120)
    (written,) = source.glob("histogram_*.db")
    for number in range(count):
        shutil.copy(written, directory / f"histogram_{NO_PROCESS + number}.db")
    shutil.rmtree(source)


def _timed(scrape: object) -> float:
    from prometheus_client import generate_latest

    started = perf_counter()
    generate_latest(scrape)  # type: ignore[arg-type]
    return perf_counter() - started


def measure(count: int) -> tuple[float, float, float, int]:
    """Seconds of a scrape merging every file, of the first scrape that folds them, of the
    next one; and the files left."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from tracekit import metrics

    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        _exited_workers(directory, count)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        unfolded = CollectorRegistry()
        MultiProcessCollector(unfolded, folder)  # type: ignore[no-untyped-call]
        merged = _timed(unfolded)
        exposition = metrics.exposition_registry()
        first = _timed(exposition)
        following = _timed(exposition)
        return merged, first, following, len(list(directory.glob("*.db")))


def main(argv: list[str] | None = None) -> int:
    """Measure, print, and (unless ``--quick``) rewrite the section of docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run; prints only")
    quick = parser.parse_args(argv).quick
    # (prometheus-client is imported before the directory is known: said once, not news here)
    logging.getLogger("tracekit").setLevel(logging.ERROR)
    counts = (10, 100) if quick else (100, 1_000, 3_000)
    header = ["exited workers", "every file merged", "first scrape", "next scrape", "files after"]
    rows = []
    for count in counts:
        merged, first, following, left = measure(count)
        rows.append(
            [f"{count:,}", f"{merged:.2f} s", f"{first:.2f} s", f"{following:.3f} s", str(left)]
        )
    print(text_table(header, rows))
    if not quick:
        replace_section(
            SECTION,
            f"{__doc__.split(chr(10) + chr(10))[1]}\n\n{markdown_table(header, rows)}\n\n"
            f"One run of each; {machine()}.",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
