"""Numbers in the sentences a diff writes (``+412.0 ms``, ``1.24 s``), ASCII only."""

from __future__ import annotations

__all__ = ["duration", "signed", "signed_pct"]


def duration(ns: float) -> str:
    """``12.5 ms``, ``1.24 s``."""
    ms = ns / 1e6
    return f"{ms / 1000:.2f} s" if abs(ms) >= 1000 else f"{ms:.1f} ms"


def signed(ns: float) -> str:
    """``+412.0 ms``, ``-30.0 ms``, ``+1.24 s``."""
    return ("-" if ns < 0 else "+") + duration(abs(ns))


def signed_pct(delta: float, base: float) -> str:
    """``+27%`` of ``base``; ``new`` when there was nothing before."""
    if base == 0:
        return "new" if delta else "+0%"
    return f"{delta / base * 100:+.0f}%"
