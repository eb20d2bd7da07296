"""Reads of a remote backend run a few at a time, their results used in the order asked for.

A trace read is a round trip to Tempo or Jaeger: read one after another, 100 traces 50 ms away
took 5 s. ``in_order`` keeps up to ``PARALLEL_READS`` reads going ahead of the one its caller
uses; a caller with a budget (spans) asks for no more at once than the budget left seems to need
at the size of what it read so far (``still_needed``), so it is overrun only by traces larger
than those before them.
Each read runs in a daemon thread of its own: a Ctrl-C, or a caller's error, leaves none behind
to wait for (``concurrent.futures``' workers are joined at exit, a timeout each).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Generic, TypeVar

__all__ = ["PARALLEL_READS", "in_order", "still_needed"]

PARALLEL_READS = 8
K = TypeVar("K")
V = TypeVar("V")


class _Read(Generic[K, V]):
    """One ``read(key)`` running in a thread of its own, its value or exception kept."""

    def __init__(self, read: Callable[[K], V], key: K) -> None:
        self.key = key
        self._outcome: tuple[bool, V | BaseException] | None = None
        self._thread = threading.Thread(
            target=self._run, args=(read,), name="tracekit-backend-read", daemon=True
        )
        self._thread.start()

    def _run(self, read: Callable[[K], V]) -> None:
        try:
            self._outcome = (True, read(self.key))
        except BaseException as error:  # handed to the caller as it is, in its turn
            self._outcome = (False, error)

    def value(self) -> V:
        self._thread.join()
        assert self._outcome is not None
        succeeded, value = self._outcome
        self._outcome = None  # no cycle through a re-raised exception's traceback
        if not succeeded:
            assert isinstance(value, BaseException)
            raise value
        return value  # type: ignore[return-value]


def in_order(
    read: Callable[[K], V], keys: Iterable[K], width: Callable[[], int] = lambda: PARALLEL_READS
) -> Iterator[tuple[K, V]]:
    """``(key, read(key))`` for each key in turn, as many reads running at once as ``width()``
    says before each (1 to ``PARALLEL_READS``); a read's exception is raised in its turn.
    ``read`` runs in other threads: what it shares with the caller must bear that."""
    remaining = iter(keys)
    pending: deque[_Read[K, V]] = deque()
    while True:
        wanted = max(1, min(width(), PARALLEL_READS)) - len(pending)
        pending.extend(_Read(read, key) for key in islice(remaining, max(wanted, 0)))
        if not pending:
            return
        done = pending.popleft()
        yield done.key, done.value()


def still_needed(held: int, reads: int, limit: int) -> int:
    """How many more reads of about the size of the ``reads`` done so far (``held`` items in
    all) it takes to hold ``limit`` items: 1 before any, as their size is not known yet. A
    budget is then not overrun by reads started on speculation: two traces that fill it are
    two reads."""
    if not reads:
        return 1
    return math.ceil((limit - held) / max(1, held // reads))
