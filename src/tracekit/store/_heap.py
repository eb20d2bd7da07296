"""Giving freed memory back to the system, for the long-lived processes of the collector.

glibc raises its mmap threshold to the largest block freed so far: after one 16 MiB request
body, later ones come from the heap, whose freed space the process keeps (measured: 40 clients
uploading 16 MiB each peaked at 239 MiB against 109 MiB with the threshold fixed). And a heap
that held a big batch keeps its free pages until trimmed. Elsewhere than glibc these do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes

_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
_MMAP_FROM = 256 * 1024


def map_large_buffers() -> None:
    """Have every allocation over 256 KiB mapped on its own, so freeing it shrinks the process."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, _MMAP_FROM)


def trim() -> None:
    """Return the heap's free pages to the system (after a large batch)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
