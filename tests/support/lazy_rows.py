"""A value whose reading parks the thread inside a span's lock (for the worker scripts of
tests/lifecycle, which run with this folder on ``PYTHONPATH``).

``span.set_attribute("rows", rows)`` reads a sequence while it holds the span's lock, as it
would read a database cursor's rows. ``LazyRows`` prints ``reading`` and sets ``reading`` when
that read starts, then sleeps a minute in it: time for a test to stop the process there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import overload


class LazyRows(Sequence[str]):
    """One row, read slowly."""

    def __init__(self) -> None:
        self.reading = threading.Event()

    def __len__(self) -> int:
        return 1

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if not isinstance(index, int) or index > 0:
            raise IndexError(index)
        print("reading", flush=True)
        self.reading.set()
        time.sleep(60)
        return "row"
