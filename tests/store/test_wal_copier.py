"""The writer process copies the WAL back into the store file beside its commits, not in them."""

from __future__ import annotations

import os
import sqlite3
import struct
from pathlib import Path

import pytest
from conditions import wait_for
from tests.store.test_wal_bound import batch

from tracekit.store import Store
from tracekit.store._process import WalCopier, WriterProcess


def test_the_wal_a_long_read_held_back_is_copied_into_the_file_without_a_commit(
    tmp_path: Path,
) -> None:
    """SQLite's commits copied the WAL back themselves: when a long read ended, the first commit
    after it copied all the read had held back, and the next batch waited for it (300 MB: 745 ms
    for that commit, against 4 ms; gRPC exporters lost 2,068 of 180,000 spans). The writer
    process now copies it from a connection of its own, so the file takes it with no commit at
    all."""
    path = tmp_path / "s.db"
    store = Store(path)
    store.create()
    writer = WriterProcess(path)
    try:
        writer.write_rows(store.encoder.encode(batch(0)), [])
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM spans").fetchone()  # its snapshot: batch 0
        for number in range(1, 60):
            writer.write_rows(store.encoder.encode(batch(number)), [])
        held_back = os.path.getsize(f"{path}-wal")
        before = path.stat().st_size
        assert held_back > 2_000_000 and before < held_back / 4
        reader.execute("COMMIT")
        reader.close()
        # every frame the read held back is in the file (the WAL's own index says so), not
        # just half its size: each commit also writes a page of ``meta`` (the batch's number)
        wait_for(lambda: _frames_copied(path) == _frames(path) > 50, timeout=10)
        assert path.stat().st_size > 10 * before
    finally:
        writer.close()
        store.close()
    with Store(path) as reading:
        assert reading.count_spans() == 60 * 200


@pytest.mark.parametrize("through_a_link", [False, True], ids=["file", "symlink-to-file"])
def test_a_wal_a_long_read_held_back_is_emptied_once_copied_while_no_one_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, through_a_link: bool
) -> None:
    """Commits only cut a WAL back to its bound when the WAL starts over, on the first commit
    after a checkpoint. A collector whose exporters went quiet after a burst that long reads held
    back (`search --min-duration` and `diff --since 7d` in loops beside 8 exporters) kept a
    473 MB WAL beside its 686 MB store for as long as nothing arrived (without --retention or
    --max-size, no pass empties it either). Once every frame is in the file and no read needs
    them, the copier empties a WAL past its bound.

    So too for a store named through a symlink to its file (``--store`` on a link to a bigger
    disk): SQLite keeps the WAL beside the file the link points to, and the copier, looking for
    one beside the link, never emptied it."""
    monkeypatch.setattr("tracekit.store._process.WAL_BOUND_BYTES", 500_000)
    path, wal = tmp_path / "s.db", tmp_path / "s.db-wal"
    if through_a_link:
        (tmp_path / "elsewhere").mkdir()
        path.symlink_to(tmp_path / "elsewhere" / "s.db")
        wal = tmp_path / "elsewhere" / "s.db-wal"
    store = Store(path)
    store.create()
    store.leave_checkpoints_to_others()  # as in the writer process
    copier = WalCopier(str(path))
    try:
        store.write_spans(batch(0))
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM spans").fetchone()  # its snapshot: batch 0
        for number in range(1, 40):
            store.write_spans(batch(number))
        assert wal.stat().st_size > 2_000_000
        reader.execute("COMMIT")
        reader.close()
        wait_for(lambda: wal.stat().st_size <= 500_000, timeout=10)
    finally:
        copier.close()
        store.close()
    with Store(path) as reading:
        assert reading.count_spans() == 40 * 200


def _frames(path: Path) -> int:
    """Frames in the WAL (``mxFrame`` of the WAL index header, in the ``-shm`` file)."""
    return int(struct.unpack_from("=I", Path(f"{path}-shm").read_bytes(), 16)[0])


def _frames_copied(path: Path) -> int:
    """Frames of the WAL copied back into the file (``nBackfill``, after the two headers)."""
    return int(struct.unpack_from("=I", Path(f"{path}-shm").read_bytes(), 96)[0])
