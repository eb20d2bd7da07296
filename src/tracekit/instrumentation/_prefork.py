"""Which task runs a Celery prefork worker's children have under way, as its main process reads it.

At a task's hard time limit billiard sends the child SIGTERM and, 0.1 s later, SIGKILL. A child
in a long C call runs no signal handler before the call returns, so it dies without recording
its run; a child that acts on the SIGTERM records it itself. The main process reports the time
limit before either happens, and cannot tell the two apart from the child's exit either (a
child that acted on the SIGTERM is often killed while it exits). So each child marks the run it
starts in a mapping the main process made before forking it, and clears the mark as the run's
span ends; a mark left once the child is gone is a run nobody recorded.

A mark is a task id's 64-bit fingerprint in one of ``SLOTS`` slots (by that fingerprint). Two
runs under way at once whose ids share a slot (about one chance in 4,096 for two runs) overwrite
each other's mark: the main process then records nothing, as without this, never twice.
"""

from __future__ import annotations

import hashlib
import mmap

SLOTS = 4096
_WIDTH = 8


class RunsUnderWay:
    """An anonymous shared mapping of ``SLOTS`` marks: made in the main process, written by the
    children forked after it, read by the main process."""

    def __init__(self) -> None:
        self._marks = mmap.mmap(-1, SLOTS * _WIDTH)

    def started(self, task_id: str) -> None:
        """In the child: the run of ``task_id`` has begun."""
        where, mark = _slot_of(task_id)
        self._marks[where : where + _WIDTH] = mark

    def ended(self, task_id: str) -> None:
        """In the child: the run of ``task_id`` has recorded its span."""
        where, mark = _slot_of(task_id)
        if self._marks[where : where + _WIDTH] == mark:
            self._marks[where : where + _WIDTH] = bytes(_WIDTH)

    def under_way(self, task_id: str) -> bool:
        """In the main process: whether a child began the run of ``task_id`` and did not end
        it (once that child is gone: whether its span was never recorded)."""
        where, mark = _slot_of(task_id)
        return self._marks[where : where + _WIDTH] == mark


def _slot_of(task_id: str) -> tuple[int, bytes]:
    mark = hashlib.blake2b(task_id.encode("utf-8", "replace"), digest_size=_WIDTH).digest()
    return int.from_bytes(mark, "big") % SLOTS * _WIDTH, mark
