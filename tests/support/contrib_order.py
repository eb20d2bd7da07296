"""OpenTelemetry's contrib instrumentation of a library and tracekit's, applied in either order
and undone in reverse (contrib's ``uninstrument()`` follows ``__wrapped__``: undone out of order,
it takes off tracekit's layer where that lies over its own)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tracekit import instrumentation

ORDERS = ["contrib first", "tracekit first"]


@contextmanager
def both_instrumented(contrib: Any, names: list[str], order: str) -> Iterator[None]:
    """``contrib`` (a contrib instrumentor) and tracekit's ``names``, in ``order`` (``ORDERS``)."""
    steps = [
        (contrib.instrument, contrib.uninstrument),
        (lambda: instrumentation.instrument(names), instrumentation.uninstrument),
    ]
    if order == "tracekit first":
        steps.reverse()
    for instrument, _ in steps:
        instrument()
    try:
        yield
    finally:
        for _, uninstrument in reversed(steps):
            uninstrument()
