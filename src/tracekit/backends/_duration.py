"""Go's ``time.Duration`` text, as Tempo writes it in errors and Jaeger reads it in queries.

Go prints ``168h0m0s``, ``1m30s``, ``1.5s``, ``250ms`` and parses any run of decimal numbers with
units ``h``, ``m``, ``s``, ``ms``, ``us`` (or ``µs``) and ``ns`` -- but never exponent notation, so
Python's ``f"{x:g}s"`` (``5e-05s``) is refused with a 400.
"""

from __future__ import annotations

import re

NANOS = {"h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "µs": 10**3,
         "μs": 10**3, "ns": 1}  # fmt: skip
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|μs|ns)")
_WHOLE = re.compile(rf"(?:{_PART.pattern})+")


def go_duration(nanoseconds: int) -> str:
    """A non-negative duration in the largest unit that states it exactly: ``50us``, ``1500ms``."""
    if nanoseconds < 0:
        raise ValueError("a duration filter cannot be negative")
    for unit in ("s", "ms", "us"):
        if nanoseconds % NANOS[unit] == 0:
            return f"{nanoseconds // NANOS[unit]}{unit}"
    return f"{nanoseconds}ns"


def parse_go_duration(text: str) -> float | None:
    """Seconds in a Go duration such as ``168h0m0s`` or ``1.5s``; None if it is not one."""
    if not _WHOLE.fullmatch(text):
        return None
    nanos = sum(float(number) * NANOS[unit] for number, unit in _PART.findall(text))
    return nanos / 1e9
