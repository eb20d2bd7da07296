"""Reading a store on a full disk: the operator looks at what was stored while no byte can be
written (a collector stopped or restarted when the disk filled up).

The full disk is a file size limit (RLIMIT_FSIZE: a write that would grow a file past it fails
with EFBIG, as one on a full disk fails with ENOSPC; SQLite reports both alike): 0, where SQLite
cannot write the new -shm file's first bytes, and 1,000, where it cannot give it its 32 KiB (what
a full tmpfs did, checked by hand: the same words before, the same output after)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tracekit.records import SpanRecord
from tracekit.store import Store

CLI = [sys.executable, "-c", "from tracekit_cli.main import main; main()"]
NOW = 1_700_000_000 * 10**9


def _on_a_full_disk(room: int, *command: str) -> subprocess.CompletedProcess[str]:
    def no_file_grows_past_room() -> None:
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (room, hard))  # Python ignores SIGXFSZ: EFBIG

    return subprocess.run(
        [*CLI, *command],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=no_file_grows_past_room,
    )


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "t.db"
    with Store(path) as writer:  # closed: no -wal or -shm left, as after a collector stopped
        writer.write_spans([
            SpanRecord("ab" * 16, "cd" * 8, None, "gateway", "GET /", "SERVER", NOW,
                       NOW + 10**6, attributes={"correlation.id": "req-1"}),
        ])  # fmt: skip
    return path


@pytest.mark.parametrize("room", [0, 1000])
def test_search_reads_a_store_on_a_full_disk(store: Path, room: int) -> None:
    """Before: 'tracekit: store PATH: disk I/O error', exit 2 (SQLite could not give a new -shm
    file its size), for every read command: nothing stored could be seen until space returned."""
    result = _on_a_full_disk(room, "search", "--store", str(store), "--format", "json")

    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert [r["correlation_id"] for r in json.loads(result.stdout)["requests"]] == ["req-1"]


def test_trace_shows_a_request_from_a_store_on_a_full_disk(store: Path) -> None:
    result = _on_a_full_disk(0, "trace", "req-1", "--store", str(store), "--format", "json")

    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert [span["name"] for span in json.loads(result.stdout)["spans"]] == ["GET /"]
