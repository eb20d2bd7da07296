"""Exited processes' multiprocess files folded into one per kind (``tracekit._metrics.fold``).

Every file here is written by a real prometheus-client in multiprocess mode, in a process of its
own that has exited, as a worker recycled by gunicorn's ``--max-requests`` leaves them; scrapes
are tracekit's exposition of the directory. Each exited worker's files stayed and every scrape
read them all (1,000 exited workers: 20 s a scrape). A scrape now folds them first: the totals
are the same, the files one per kind.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from conditions import need
from ordinary_user import as_an_ordinary_user
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from stopping import mount_namespace_prefix

from tracekit import metrics
from tracekit._metrics import fold
from tracekit._metrics.fold import LOCK_FILE, reading

_WORKER = """
import sys
from prometheus_client import Counter, Gauge, Histogram
served = int(sys.argv[1])
requests = Counter("served", "Requests served", ["route"])
took = Histogram("took_seconds", "Time taken", ["route"], buckets=(0.1, 1.0))
for number in range(served):
    requests.labels("/orders").inc()
    took.labels("/orders").observe(0.25)
for mode in sys.argv[2:]:
    Gauge(f"pool_{mode}", "Connections", multiprocess_mode=mode).set(served)
"""
_GAUGE_MODES = ("livesum", "sum", "max", "min", "all", "mostrecent")
_FOLDED = [
    "counter_folded.db",
    "gauge_max_folded.db",
    "gauge_min_folded.db",
    "gauge_sum_folded.db",
    "histogram_folded.db",
]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _exit_workers(directory: Path, served: list[int], modes: tuple[str, ...]) -> None:
    """Run a worker per number in ``served``, each serving that many requests, then exiting."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    for count in served:
        argv = [sys.executable, "-c", _WORKER, str(count), *modes]
        subprocess.run(argv, env=env, check=True, timeout=60)


def _scrape(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Samples:
    """The samples of one scrape of tracekit's exposition of ``directory``."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    text = generate_latest(metrics.exposition_registry()).decode()  # type: ignore[arg-type]
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _process_files(directory: Path) -> list[str]:
    """The names of the files of processes (not folded ones) in ``directory``."""
    return sorted(
        path.name for path in directory.glob("*.db") if path.stem.rpartition("_")[2].isdigit()
    )


ROUTE = (("route", "/orders"),)


@pytest.mark.parametrize("parser", ["private", "public"])
def test_exited_workers_are_folded_with_their_totals_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parser: str
) -> None:
    """``public``: a prometheus-client without the private ``_read_all_values`` the fold reads
    a file's bytes with (it then reads the file again through the public method)."""
    if parser == "public":
        monkeypatch.setattr(fold, "mmap_dict", types.SimpleNamespace())
    _exit_workers(tmp_path, [1, 2, 3], _GAUGE_MODES)
    first = _scrape(tmp_path, monkeypatch)
    _exit_workers(tmp_path, [4, 5], _GAUGE_MODES)
    second = _scrape(tmp_path, monkeypatch)

    assert first[("served_total", ROUTE)] == 6
    assert first[("took_seconds_count", ROUTE)] == 6
    assert second[("served_total", ROUTE)] == 15
    assert second[("took_seconds_bucket", (("le", "0.1"), *ROUTE))] == 0
    assert second[("took_seconds_bucket", (("le", "1.0"), *ROUTE))] == 15
    assert second[("took_seconds_bucket", (("le", "+Inf"), *ROUTE))] == 15
    assert second[("took_seconds_count", ROUTE)] == 15
    assert second[("took_seconds_sum", ROUTE)] == 3.75
    # gauges as prometheus-client combines them: live ones of exited workers gone, the others
    # summed, the largest, the smallest, one per process (by pid), the most recent
    assert ("pool_livesum", ()) not in second
    assert second[("pool_sum", ())] == 15
    assert second[("pool_max", ())] == 5
    assert second[("pool_min", ())] == 1
    assert sorted(v for (name, _), v in second.items() if name == "pool_all") == [1, 2, 3, 4, 5]
    assert ("pool_mostrecent", ()) in second
    # one file per kind, and those of the gauges kept per process (all, mostrecent)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [*_FOLDED, LOCK_FILE, *_process_files(tmp_path)]
    )
    kept = {name.rpartition("_")[0] for name in _process_files(tmp_path)}
    assert kept == {"gauge_all", "gauge_mostrecent"}
    assert len(_process_files(tmp_path)) == 10


def test_a_live_workers_files_are_not_folded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _exit_workers(tmp_path, [3], ("livesum",))
    (exited,) = tmp_path.glob("counter_*.db")
    live = exited.rename(tmp_path / f"counter_{os.getpid()}.db")  # this process's: alive
    _exit_workers(tmp_path, [2], ("livesum",))

    assert _scrape(tmp_path, monkeypatch)[("served_total", ROUTE)] == 5
    assert live.exists()
    assert (tmp_path / "counter_folded.db").exists()
    assert _scrape(tmp_path, monkeypatch)[("served_total", ROUTE)] == 5


# Folds the directory (argv[1]) in a process killed (SIGKILL) at its file-system step argv[2]:
# a value written into a new folded file, a file taken (renamed), linked, moved or removed.
_FOLD_KILLED = """
import os, signal, sys
from prometheus_client.mmap_dict import MmapedDict
from tracekit._metrics import fold

steps = 0

def killed_at_its_step(call):
    def step(*args, **kwargs):
        global steps
        steps += 1
        if steps == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
        return call(*args, **kwargs)
    return step

os.replace = killed_at_its_step(os.replace)
os.rename = killed_at_its_step(os.rename)
os.link = killed_at_its_step(os.link)
os.unlink = killed_at_its_step(os.unlink)
MmapedDict.write_value = killed_at_its_step(MmapedDict.write_value)
fold.fold_exited(sys.argv[1])
"""


def test_a_fold_killed_at_any_step_loses_and_doubles_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed (``kill -9``) as it folded, at each of its steps in turn: the next scrape
    counts every request once, and its fold leaves one file per kind."""
    workers = tmp_path / "workers"
    workers.mkdir()
    _exit_workers(workers, [1, 2], ("livesum", "sum", "max"))
    _scrape(workers, monkeypatch)  # folded once: a fold adds to a folded file
    _exit_workers(workers, [3, 4], ("livesum", "sum", "max"))
    killed_at = 0
    while True:
        killed_at += 1
        directory = tmp_path / f"killed-at-{killed_at}"
        shutil.copytree(workers, directory)
        argv = [sys.executable, "-c", _FOLD_KILLED, str(directory), str(killed_at)]
        folding = subprocess.run(argv, timeout=60, capture_output=True)

        scrape = _scrape(directory, monkeypatch)
        assert scrape[("served_total", ROUTE)] == 10, killed_at
        assert scrape[("took_seconds_count", ROUTE)] == 10, killed_at
        assert scrape[("pool_sum", ())] == 10, killed_at
        assert scrape[("pool_max", ())] == 4, killed_at
        assert _process_files(directory) == [], killed_at
        assert sorted(path.name for path in directory.iterdir()) == [
            "counter_folded.db", "gauge_max_folded.db", "gauge_sum_folded.db",
            "histogram_folded.db", LOCK_FILE,
        ], killed_at  # fmt: skip
        if folding.returncode == 0:  # not killed: every step was tried
            break
        assert folding.returncode == -signal.SIGKILL, folding.stderr.decode()
    assert killed_at > 30  # (35 steps: values written, files taken, moved and removed)


def test_a_journal_no_fold_wrote_removes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal lies in a directory others can write: one naming files that are no worker's
    (outside the directory, another program's) is dropped, and the fold goes on."""
    outside = tmp_path / "counter_123.db"
    outside.write_bytes(b"kept")
    directory = tmp_path / "multiproc"
    directory.mkdir()
    other = directory / "notes.db"
    other.write_bytes(b"kept")
    _exit_workers(directory, [2], ())
    journals = [
        json.dumps({"replace": {}, "remove": ["../counter_123.db"]}).encode(),
        json.dumps({"replace": {}, "remove": ["notes.db"]}).encode(),
        json.dumps({"replace": {"notes.db.new": "notes.db"}, "remove": []}).encode(),
        json.dumps({"replace": {"5.new": 5}, "remove": []}).encode(),
        json.dumps({"replace": {}, "remove": "not a list"}).encode(),
        b"\xff{",
        b"[" * 100_000,
    ]
    for journal in journals:
        (directory / "tracekit-fold.journal").write_bytes(journal)
        assert _scrape(directory, monkeypatch)[("served_total", ROUTE)] == 2
        assert not (directory / "tracekit-fold.journal").exists()
    assert outside.read_bytes() == other.read_bytes() == b"kept"


def test_a_file_named_for_no_possible_process_does_not_fail_the_scrape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live gauge's file named with a number too large for a process ID failed every scrape
    (``OverflowError`` asking whether that process lived)."""
    _exit_workers(tmp_path, [2], ("livesum",))
    (livesum,) = tmp_path.glob("gauge_livesum_*.db")
    shutil.copy(livesum, tmp_path / f"gauge_livesum_{10**30}.db")
    assert _scrape(tmp_path, monkeypatch)[("served_total", ROUTE)] == 2


def test_the_master_reaping_a_worker_leaves_the_fold_to_a_scrape_it_would_wait_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gunicorn's master folds a worker's files as it reaps it (``mark_process_dead`` in
    ``child_exit``). While a scrape reads the directory it does not wait (its workers would
    wait with it): the fold is the next scrape's."""
    _exit_workers(tmp_path, [2], ("livesum",))
    (livesum,) = tmp_path.glob("gauge_livesum_*.db")
    pid = int(livesum.stem.rpartition("_")[2])
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    reaped = threading.Event()

    def reap() -> None:
        metrics.mark_process_dead(pid)
        reaped.set()

    with reading(str(tmp_path)):  # a scrape reading the directory
        master = threading.Thread(target=reap, daemon=True)
        master.start()
        master.join(30)
        assert reaped.is_set()
        assert _process_files(tmp_path) == [f"counter_{pid}.db", f"histogram_{pid}.db"]
    metrics.mark_process_dead(pid)
    assert _process_files(tmp_path) == []
    assert _scrape(tmp_path, monkeypatch)[("served_total", ROUTE)] == 2


def test_a_process_forked_during_a_scrape_does_not_keep_the_directory_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gunicorn ``--preload``: the master serves the metrics port and forks workers while a
    scrape reads the directory. An ``flock`` belongs to the open file, which a forked child
    shares: each worker forked then held the lock for as long as it lived, and no fold could
    happen (files piled up as before)."""
    with reading(str(tmp_path)):  # a scrape reading the directory
        child = os.fork()
        if child == 0:  # a worker, living on
            time.sleep(60)
            os._exit(0)
    try:
        _exit_workers(tmp_path, [2], ())  # (after the fork: their numbers are not the child's)
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        metrics.mark_process_dead(child)  # (alive: a fold of the others' files)
        assert _process_files(tmp_path) == []
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    assert _scrape(tmp_path, monkeypatch)[("served_total", ROUTE)] == 2


def test_a_process_forked_as_a_scrape_ends_starts(tmp_path: Path) -> None:
    """A process forked as a scrape in another thread opened the lock file, or was closing it,
    inherited it unknown (not yet, or no longer, among those a child closes): it held the
    scrape's shared lock for its whole life, and waited forever for its exclusive one as it
    folded at its start (``fold_reused``): 36 of 300 gunicorn-like forks hung."""
    scraping = threading.Event()

    def scrapes() -> None:
        while not scraping.is_set():
            with reading(str(tmp_path)):
                pass

    scraper = threading.Thread(target=scrapes, daemon=True)
    scraper.start()
    hung = False
    try:
        for _ in range(60):
            child = os.fork()
            if child == 0:  # a worker starting: its fold, bounded by an alarm
                signal.signal(signal.SIGALRM, signal.SIG_DFL)  # (not pytest-timeout's)
                signal.alarm(5)
                fold.fold_reused(str(tmp_path), forked=True)
                os._exit(0)
            _, status = os.waitpid(child, 0)
            hung = os.WIFSIGNALED(status)
            if hung:
                break
    finally:
        scraping.set()
        scraper.join()
    assert not hung


def test_a_scrape_folding_a_reaped_workers_live_gauges_first_does_not_stop_the_master(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prometheus-client's ``mark_process_dead`` lists a reaped worker's live gauge files, then
    removes them: a scrape's fold that removed one in between (the worker has exited for both)
    made it raise ``FileNotFoundError`` in gunicorn's ``child_exit``, which gunicorn's master
    re-raises ("Unhandled exception in main loop") and exits with, taking the server down."""
    from prometheus_client import multiprocess

    _exit_workers(tmp_path, [2], ("livesum", "liveall"))
    (livesum,) = tmp_path.glob("gauge_livesum_*.db")
    pid = int(livesum.stem.rpartition("_")[2])
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    class FoldedByAScrapeMeanwhile:
        @staticmethod
        def glob(pattern: str) -> list[str]:
            found = glob.glob(pattern)
            generate_latest(metrics.exposition_registry())  # type: ignore[arg-type]
            return found

    monkeypatch.setattr(multiprocess, "glob", FoldedByAScrapeMeanwhile)
    metrics.mark_process_dead(pid)
    assert _process_files(tmp_path) == []
    assert _scrape(tmp_path, monkeypatch)[("served_total", ROUTE)] == 2


def test_a_file_left_taken_under_a_live_processs_id_does_not_stop_every_fold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fold killed after it took an exited worker's file (``<name>.db.folding``), whose ID a
    new process then got and made a file of its own under: the taken file could not be given
    back, and was left to the next fold, which found its ID alive and gave up, folding nothing
    for as long as that process lived (its requests missing from every scrape, the exited
    workers' files piling up)."""
    _exit_workers(tmp_path, [1], ())
    (exited,) = tmp_path.glob("counter_*.db")
    given_its_id = subprocess.Popen(
        [sys.executable, "-c", _WORKER + "print('ready', flush=True)\nsys.stdin.readline()", "2"],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert given_its_id.stdout is not None
        given_its_id.stdout.readline()
        exited.rename(tmp_path / f"counter_{given_its_id.pid}.db.folding")
        _exit_workers(tmp_path, [4, 8], ())

        assert _scrape(tmp_path, monkeypatch)[("served_total", ROUTE)] == 15
        assert sorted(path.name for path in tmp_path.glob("counter_*")) == [
            f"counter_{given_its_id.pid}.db",
            "counter_folded.db",
        ]
    finally:
        given_its_id.kill()
        given_its_id.wait()


# In argv[1], a full file system: two workers (argv[2]) serve 2 and 3 requests and exit, the
# disk fills, gunicorn's master reaps the first (folding) and a scrape follows.
_REAPED_ON_A_FULL_DISK = """
import os, subprocess, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory = sys.argv[1]
from prometheus_client import generate_latest
from tracekit import metrics

workers = [subprocess.Popen([sys.executable, "-c", sys.argv[2], str(n)]) for n in (2, 3)]
for worker in workers:
    worker.wait()
filler = os.open(os.path.join(directory, "filler"), os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(filler, bytes(4096))
except OSError:
    pass
metrics.mark_process_dead(workers[0].pid)
print(generate_latest(metrics.exposition_registry()).decode())
"""


def test_a_fold_on_a_full_disk_does_not_kill_the_process_folding(tmp_path: Path) -> None:
    """prometheus-client writes its files through ``mmap``: the fold writing its folded file
    into a full file system was killed (SIGBUS), and the process folding is gunicorn's master
    as it reaps a worker, or the one serving the scrape."""
    mount = 'mount -t tmpfs -o size=512k tmpfs "$0" && exec "$@"'
    script = [sys.executable, "-c", _REAPED_ON_A_FULL_DISK, str(tmp_path), _WORKER]
    argv = [*mount_namespace_prefix(), "sh", "-c", mount, str(tmp_path), *script]
    reaping = subprocess.run(argv, capture_output=True, timeout=60)

    assert reaping.returncode == 0, reaping.stderr.decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reaping.stdout.decode())
        for sample in family.samples
    }
    assert samples[("served_total", ROUTE)] == 5
    assert samples[("took_seconds_count", ROUTE)] == 5


# A scrape of tracekit's exposition of argv[1], then one of prometheus-client's own reader.
_SCRAPED_TWICE = """
import sys
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from tracekit import metrics

own_reader = CollectorRegistry()
MultiProcessCollector(own_reader, sys.argv[1])
print(generate_latest(metrics.exposition_registry()).decode())
print(generate_latest(own_reader).decode())
"""


def test_another_users_files_in_a_shared_directory_hide_no_others(tmp_path: Path) -> None:
    """A directory shared by several users (``/tmp``-like, sticky): a fold that could not take
    (rename) another user's file failed with the files before it taken, and these were left
    out of every scrape, tracekit's and prometheus-client's, until the next fold, which failed
    the same way."""
    need(os.geteuid() == 0, "root, to give a worker's files to another user")
    tmp_path.chmod(0o1777)
    _exit_workers(tmp_path, [1, 2], ())
    another_users = sorted(tmp_path.glob("counter_*.db"))[-1]  # (taken last: the others first)
    os.chown(another_users, 65534, 65534)
    os.chown(tmp_path, 65534, 65534)  # (the sticky bit lets the directory's owner rename any)
    argv = [*as_an_ordinary_user(), sys.executable, "-c", _SCRAPED_TWICE, str(tmp_path)]
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    scraped = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    assert scraped.returncode == 0, scraped.stderr
    totals = [
        sample.value
        for family in text_string_to_metric_families(scraped.stdout)
        for sample in family.samples
        if sample.name == "served_total"
    ]
    assert totals == [3, 3]
    assert not list(tmp_path.glob("*.folding"))


@pytest.mark.parametrize("planted", ["counter_folded.db.new", "tracekit-fold.journal.new"])
def test_a_link_planted_as_a_folds_new_file_is_not_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, planted: str
) -> None:
    """In a directory others may write, a symlink named as a file the fold writes, made after
    the fold removed what its last run left (a loop of ``ln -s`` won that race in 9 folds of
    20): the fold wrote its 64 KiB or its journal through it, over the file it pointed to. It
    now makes those files new, refusing anything there: that fold is said once and skipped,
    every file given back, and the scrape counts every request."""
    directory = tmp_path / "multiproc"
    directory.mkdir()
    outside = tmp_path / "precious"
    outside.write_bytes(b"kept")
    _exit_workers(directory, [1, 2], ())
    listed = fold._foldable_files

    def listed_then_planted(*args: object) -> dict[str, list[str]]:
        found = listed(*args)  # type: ignore[arg-type]
        (directory / planted).symlink_to(outside)
        return found

    monkeypatch.setattr(fold, "_foldable_files", listed_then_planted)
    assert _scrape(directory, monkeypatch)[("served_total", ROUTE)] == 3
    assert outside.read_bytes() == b"kept"
    assert not list(directory.glob("*.folding"))


def test_a_link_planted_as_the_lock_file_creates_no_file_where_it_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tracekit-fold.lock`` a symlink to a path with no file: the scrape created an empty file
    there, as whoever scraped (root: ``/etc/nologin`` would stop every login). The link is
    refused, said once; the scrape reads without the lock and counts every request."""
    directory = tmp_path / "multiproc"
    directory.mkdir()
    pointed_at = tmp_path / "nologin"
    (directory / LOCK_FILE).symlink_to(pointed_at)
    _exit_workers(directory, [1, 2], ())

    assert _scrape(directory, monkeypatch)[("served_total", ROUTE)] == 3
    assert not pointed_at.exists()
