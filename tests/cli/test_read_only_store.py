"""Reading needs no write access: the CLI reads a store in a folder its user may not write, the
way an operator reads a collector's store that another account owns."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ordinary_user import as_an_ordinary_user

from tracekit.records import SpanRecord
from tracekit.store import Store

CLI = [sys.executable, "-c", "from tracekit_cli.main import main; main()"]
NOW = 1_700_000_000 * 10**9


def _request(n: int) -> SpanRecord:
    return SpanRecord(f"{n:032x}", f"{n:016x}", None, "svc", f"GET /{n}", "SERVER", NOW + n,
                      NOW + n + 1_000, attributes={"correlation.id": f"req-{n}"})  # fmt: skip


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "collector"
    folder.mkdir()
    with Store(folder / "t.db") as store:
        store.write_spans([_request(1)])
    folder.chmod(0o500)  # read and search only: no -shm can be made here
    yield folder
    folder.chmod(0o700)


def _search(path: Path) -> subprocess.CompletedProcess[str]:
    command = [*CLI, "search", "--store", str(path), "--format", "json"]
    return subprocess.run(
        [*as_an_ordinary_user(), *command], capture_output=True, text=True, timeout=60
    )


def _correlation_ids(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return [r["correlation_id"] for r in json.loads(result.stdout)["requests"]]


def test_search_reads_a_store_in_a_folder_it_may_not_write(folder: Path) -> None:
    """Before: 'attempt to write a readonly database' and exit 2 (SQLite could not make the
    WAL's -shm file there)."""
    assert _correlation_ids(_search(folder / "t.db")) == ["req-1"]
    assert sorted(p.name for p in folder.iterdir()) == ["t.db", "t.db-lock"]


def test_it_sees_what_a_writer_still_holding_the_store_committed(folder: Path) -> None:
    """A writer with write access (the collector's account) has the WAL open: its latest
    commit is in the -wal file, not yet in the store file, and the reader sees it."""
    with Store(folder / "t.db") as writer:  # this test's root may write in the folder
        writer.write_spans([_request(2)])
        assert (folder / "t.db-wal").stat().st_size > 0
        assert _correlation_ids(_search(folder / "t.db")) == ["req-2", "req-1"]


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*as_an_ordinary_user(), *CLI, *command], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("command", [["search"], ["services"], ["trace", "req-1"]])
def test_a_store_in_a_folder_it_may_not_enter_is_one_line(folder: Path, command: list[str]) -> None:
    """Another account's store, in that account's private folder: before, 'internal error
    (PermissionError: ...)', the line the CLI keeps for its own bugs."""
    folder.chmod(0o000)
    result = _run([*command, "--store", str(folder / "t.db")])
    assert result.returncode == 2
    assert result.stderr == f"tracekit: store {folder / 't.db'}: Permission denied\n"


def test_a_store_file_it_may_not_read_is_named_as_such(folder: Path) -> None:
    """Before: 'unable to open database file', SQLite's words for any file it cannot open."""
    (folder / "t.db").chmod(0o000)
    try:
        result = _run(["search", "--store", str(folder / "t.db")])
    finally:
        (folder / "t.db").chmod(0o600)
    assert result.returncode == 2
    assert result.stderr == f"tracekit: store {folder / 't.db'}: Permission denied\n"
