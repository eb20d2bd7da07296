"""A worker's file that cannot be read, left in the multiprocess directory for good.

prometheus-client creates a worker's file empty and sizes it after: a worker killed in between
leaves an empty file that no scrape can merge. The scrape leaves it out (tested under gunicorn in
test_gunicorn_multiprocess.py); here, that it is not read again at every scrape while it stays as
it was, and that it is read again once it changes. The worker's file is written by a real
prometheus-client in multiprocess mode, in a process of its own.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tracekit import metrics

_WORKER = """
from prometheus_client import Histogram
served = Histogram("served_seconds", "Time served", ["route"])
for _ in range(3):
    served.labels("/orders").observe(0.1)
"""


def _served(exposition: bytes) -> float:
    families = text_string_to_metric_families(exposition.decode())
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == "served_seconds_count"
    )


def test_a_file_that_cannot_be_read_is_left_out_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    directory = _directory_with_a_worker(tmp_path, monkeypatch)
    (written,) = directory.glob("*.db")
    killed = directory / "histogram_4194301.db"  # a pid that never returns
    killed.touch()
    read: list[str] = []
    merge = MultiProcessCollector.merge

    def counted(files: Iterable[str], accumulate: bool = True) -> object:
        files = list(files)
        read.extend(files)
        return merge(files, accumulate)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(MultiProcessCollector, "merge", staticmethod(counted))
    exposition = metrics.exposition_registry()

    with caplog.at_level(logging.WARNING, logger="tracekit"):
        scrapes = [_served(generate_latest(exposition)) for _ in range(3)]  # type: ignore[arg-type]
    assert scrapes == [3, 3, 3]
    # the first scrape finds it (the whole merge fails, then the file alone); no later one reads it
    assert read.count(str(killed)) == 2
    assert read.count(str(written)) == 5  # the failed merge, alone, then once a scrape
    (warning,) = [r for r in caplog.records if "histogram_4194301.db" in r.getMessage()]
    shown = warning.getMessage()
    assert "Traceback (most recent call last)" in shown
    assert "During handling" not in shown  # not chained to the failed whole merge

    killed.write_bytes(written.read_bytes())  # sized at last: a worker's values like the other's
    assert _served(generate_latest(exposition)) == 6  # type: ignore[arg-type]


def _directory_with_a_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A multiprocess directory holding one real worker's file (3 requests served), named for a
    live process (this one): an exited worker's would be folded into another at a scrape."""
    directory = tmp_path / "multiproc"
    directory.mkdir()
    worker_env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run([sys.executable, "-c", _WORKER], env=worker_env, check=True, timeout=60)
    (exited,) = directory.glob("*.db")
    exited.rename(directory / f"histogram_{os.getpid()}.db")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    return directory


def test_a_file_sized_while_it_was_found_unreadable_is_read_at_the_next_scrape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that sizes its file (and writes its values) just as a scrape finds it empty:
    the file was remembered as it was after, so it stayed left out, its values missing from
    every scrape while its size and time stayed the same (an idle worker: for good)."""
    directory = _directory_with_a_worker(tmp_path, monkeypatch)
    (written,) = directory.glob("*.db")
    starting = directory / f"histogram_{os.getppid()}.db"  # a live worker, not yet sized
    starting.touch()
    merge = MultiProcessCollector.merge

    def sized_as_read(files: Iterable[str], accumulate: bool = True) -> object:
        files = list(files)
        try:
            return merge(files, accumulate)  # type: ignore[no-untyped-call]
        finally:
            if files == [str(starting)] and not starting.stat().st_size:
                starting.write_bytes(written.read_bytes())  # the worker, meanwhile

    monkeypatch.setattr(MultiProcessCollector, "merge", staticmethod(sized_as_read))
    exposition = metrics.exposition_registry()

    assert _served(generate_latest(exposition)) == 3  # type: ignore[arg-type]
    assert _served(generate_latest(exposition)) == 6  # type: ignore[arg-type]


def test_an_unreadable_file_replaced_by_one_of_the_same_size_and_time_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file found unreadable, then replaced by a new one of the same size and modification
    time (written within one tick of the file system's clock, or restored with its times): it
    stayed left out, the new file's values missing from every scrape."""
    directory = _directory_with_a_worker(tmp_path, monkeypatch)
    (written,) = directory.glob("*.db")
    values = written.read_bytes()
    broken = directory / f"histogram_{os.getppid()}.db"  # a live worker's
    broken.write_bytes(b"\xff\xff\xff\x7f" + values[4:])  # says it holds more than its size
    exposition = metrics.exposition_registry()
    assert _served(generate_latest(exposition)) == 3  # type: ignore[arg-type]

    before = broken.stat()
    replacement = directory / "replacement.tmp"
    replacement.write_bytes(values)
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(replacement, broken)

    assert broken.stat().st_size == before.st_size
    assert broken.stat().st_mtime_ns == before.st_mtime_ns
    assert _served(generate_latest(exposition)) == 6  # type: ignore[arg-type]
