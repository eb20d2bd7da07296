"""The demo's canary step takes turns on its store through a lock file beside it."""

from __future__ import annotations

import fcntl
import os
import pwd
from pathlib import Path

import pytest

from tracekit_cli.demo.canary import _taking_turns, canary_store


class _Console:
    def print(self, *args: object) -> None:
        raise AssertionError("nobody else holds the lock")


def test_a_symlink_at_the_lock_path_is_not_followed(tmp_path: Path) -> None:
    """``tracekit demo --store /tmp/tracekit.db`` opened ``/tmp/tracekit-canary.db.lock``
    following a symlink anyone could have left there, creating the file it named as the user
    running the demo (``/etc/nologin`` run as root). The step now stops on such a link
    (an OSError, which the demo reports on one line) and creates nothing."""
    named = tmp_path / "private" / "nologin"
    named.parent.mkdir()
    store = canary_store(tmp_path / "tracekit.db")
    store.with_name(f"{store.name}.lock").symlink_to(named)
    with pytest.raises(OSError), _taking_turns(_Console(), store):
        pass
    assert not named.exists()


def test_the_lock_is_a_private_file_beside_the_store(tmp_path: Path) -> None:
    store = canary_store(tmp_path / "tracekit.db")
    with _taking_turns(_Console(), store):
        lock = store.with_name(f"{store.name}.lock")
        assert lock.is_file() and lock.stat().st_mode & 0o777 == 0o600


def test_a_lock_file_another_user_left_in_a_shared_folder_is_refused(tmp_path: Path) -> None:
    """Another user's lock file, mode 0666, beside ``tracekit demo --store /tmp/x/tracekit.db``
    in a shared folder (sticky, writable by all), locked by that user: the canary step printed
    "waiting for another demo's canary step on this store" and waited forever (measured: still
    waiting after 240 s). The step now refuses the file (an OSError, one line from the demo) and
    waits for nobody."""
    from conditions import need

    need(os.geteuid() == 0, "root, to leave a file another user owns")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    store = canary_store(shared / "tracekit.db")
    lock_path = store.with_name(f"{store.name}.lock")
    theirs = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        os.fchmod(theirs, 0o666)
        os.fchown(theirs, pwd.getpwnam("nobody").pw_uid, -1)
        fcntl.flock(theirs, fcntl.LOCK_EX)  # held as theirs would be: taking it means waiting
        with pytest.raises(PermissionError, match="another user"), _taking_turns(_Console(), store):
            pass
    finally:
        os.close(theirs)
