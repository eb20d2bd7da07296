"""Numbers in the sentences a diff writes (``+412.0 ms``, ``1.24 s``), ASCII only."""

from __future__ import annotations

__all__ = ["duration", "signed", "signed_pct"]


def duration(ns: float) -> str:
    """``12.5 ms``, ``1.24 s``."""
    # the unit is chosen by what is shown: 999.96 ms would read "1000.0 ms", and a 40 us drop
    # "-0.0 ms" (+ 0.0 turns the negative zero that rounding leaves into a plain one)
    ms = round(ns / 1e6, 1) + 0.0
    return f"{ns / 1e9:.2f} s" if abs(ms) >= 1000 else f"{ms:.1f} ms"


def signed(ns: float) -> str:
    """``+412.0 ms``, ``-30.0 ms``, ``+1.24 s``; ``+0.0 ms`` for what rounds to nothing."""
    shown = duration(ns)
    return shown if shown.startswith("-") else "+" + shown


def signed_pct(delta: float, base: float) -> str:
    """``+27%`` of ``base``, ``-0.3%`` under one percent; ``new`` when there was nothing before."""
    if base == 0:
        return "new" if delta else "+0%"
    pct = delta / base * 100
    if delta and round(pct) == 0:  # "-0%" beside "-0.3 ms" would lose the change and its sign
        return f"{pct:+.1g}%"
    return f"{pct:+.0f}%"
