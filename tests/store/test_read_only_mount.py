"""The CLI reads a store on a read-only file system (a backup mounted read-only, a volume
shared ``:ro`` into an operator's container).

The mount is made in a private mount namespace (``unshare -m``), so it needs root; elsewhere
the test is skipped (and fails in CI, where it runs as root).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from conditions import need

from tracekit.records import SpanRecord
from tracekit.store import Store

NOW = 1_700_000_000 * 10**9
CLI = f"{shlex.quote(sys.executable)} -c 'from tracekit_cli.main import main; main()'"


def _request(n: int) -> SpanRecord:
    return SpanRecord(f"{n:032x}", f"{n:016x}", None, "svc", f"GET /{n}", "SERVER", NOW + n,
                      NOW + n + 1_000, attributes={"correlation.id": f"req-{n}"})  # fmt: skip


def _search_on_read_only_mount(folder: Path) -> subprocess.CompletedProcess[str]:
    """``tracekit search`` with ``folder`` remounted read-only, in a namespace of its own."""
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "root and unshare(1)")
    place = shlex.quote(str(folder))
    script = (
        f"mount --bind {place} {place} && mount -o remount,bind,ro {place}"
        f" && {CLI} search --store {place}/t.db --format json"
    )
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60
    )


def test_search_reads_a_store_on_a_read_only_file_system(tmp_path: Path) -> None:
    """Before: 'store ...: unable to open database file' and exit 2. SQLite could not make the
    WAL's -shm file there, and a read-only file system says so otherwise than a folder the
    user may not write (EROFS, not EACCES)."""
    with Store(tmp_path / "t.db") as store:
        store.write_spans([_request(1)])

    result = _search_on_read_only_mount(tmp_path)

    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    requests = json.loads(result.stdout)["requests"]
    assert [r["correlation_id"] for r in requests] == ["req-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.db", "t.db-lock"]


def test_search_reads_a_snapshot_whose_last_commits_are_only_in_its_wal(tmp_path: Path) -> None:
    """Before: 'store ...: unable to open database file' and exit 2. A copy taken while a writer
    had the store open (a snapshot, files copied off a pod) has a -wal file and no -shm file,
    and SQLite cannot make one on a read-only file system."""
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    with Store(tmp_path / "t.db") as store:
        store.write_spans([_request(1)])
        store.write_spans([_request(2)])  # a small commit: still in the WAL, not in t.db
        for name in ("t.db", "t.db-wal"):
            shutil.copyfile(tmp_path / name, snapshot / name)

    result = _search_on_read_only_mount(snapshot)

    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    requests = json.loads(result.stdout)["requests"]
    assert sorted(r["correlation_id"] for r in requests) == ["req-1", "req-2"]
    assert sorted(p.name for p in snapshot.iterdir()) == ["t.db", "t.db-wal"]


def test_the_collector_names_a_read_only_file_system(tmp_path: Path) -> None:
    """It said 'cannot open store PATH: unable to open database file', SQLite's words for any
    file it cannot open, which sent the operator looking at modes and owners."""
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "root and unshare(1)")
    Store(tmp_path / "t.db").create()
    place = shlex.quote(str(tmp_path))
    script = (
        f"mount --bind {place} {place} && mount -o remount,bind,ro {place}"
        f" && {CLI} collector --port 0 --grpc-port 0 --store {place}/t.db"
    )
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"tracekit collector: cannot open store {tmp_path / 't.db'}: Read-only file system\n"
    )
