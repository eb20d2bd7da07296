"""The demo's canary step takes turns on its store through a lock file beside it."""

from __future__ import annotations

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
