"""What counts as a difference: the smallest timing change worth saying, and ``--fail-on``.

A timing change counts when it is at least ``min_delta_ms`` *and* at least ``min_delta_pct`` of
the value before (a node that took no time before passes the second test by any amount): two
runs of the same request never take exactly the same time, and 3 ms on a 2 s call is noise even
though 3 ms on a 4 ms call is not.

``--fail-on`` narrows which kinds of difference make the exit status 1; the report still shows
everything. Its grammar: a comma-separated list of ``structure`` (nodes added or removed, call
counts), ``retries``, ``errors`` (new or gone), ``order`` (order or concurrency changed),
``timing`` (any timing change above the thresholds), ``resources`` (version, host…), and
``slower`` (the whole request slower), optionally with a bound: ``slower=20%``, ``slower=50ms``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "CATEGORIES",
    "ERRORS",
    "ORDER",
    "RESOURCES",
    "RETRIES",
    "SLOWER",
    "STRUCTURE",
    "TIMING",
    "FailOn",
    "Thresholds",
    "parse_fail_on",
]

STRUCTURE = "structure"
RETRIES = "retries"
ERRORS = "errors"
ORDER = "order"
TIMING = "timing"
RESOURCES = "resources"
SLOWER = "slower"
CATEGORIES = (STRUCTURE, RETRIES, ERRORS, ORDER, TIMING, RESOURCES)

_BOUND = re.compile(r"^(\d+(?:\.\d+)?)\s*(%|ms|s)$")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The smallest timing change reported: both an absolute and a relative bound."""

    min_delta_ms: float = 5.0
    min_delta_pct: float = 10.0

    def exceeded(self, before_ns: float, after_ns: float) -> bool:
        """True when going from ``before_ns`` to ``after_ns`` is a change worth reporting."""
        delta_ms = abs(after_ns - before_ns) / 1e6
        if delta_ms == 0 or delta_ms < self.min_delta_ms:
            return False
        return before_ns == 0 or delta_ms * 1e6 / abs(before_ns) * 100 >= self.min_delta_pct


@dataclass(frozen=True, slots=True)
class FailOn:
    """Which differences make ``tracekit diff`` exit 1."""

    categories: frozenset[str] = frozenset(CATEGORIES)
    slower: bool = False  # an end-to-end slowdown above the thresholds counts
    slower_pct: float = 0.0  # ... and only when at least this much slower (percent)
    slower_ms: float = 0.0  # ... and at least this many milliseconds

    def describe(self) -> list[str]:
        """The list as typed, normalised (for the JSON document)."""
        out = [name for name in CATEGORIES if name in self.categories]
        if self.slower:
            pct = [f"{SLOWER}={self.slower_pct:g}%"] if self.slower_pct else []
            ms = [f"{SLOWER}={self.slower_ms:g}ms"] if self.slower_ms else []
            out += pct + ms or [SLOWER]
        return out


def parse_fail_on(text: str | None) -> FailOn:
    """``structure,errors,order,slower=20%`` -> FailOn; None -> every kind counts.

    Raises ValueError naming the part it cannot read.
    """
    if text is None:
        return FailOn()
    categories: set[str] = set()
    slower, pct, ms = False, 0.0, 0.0
    for part in (p.strip() for p in text.split(",")):
        name, _, bound = part.partition("=")
        if name == SLOWER:
            slower = True
            pct, ms = _slower_bound(bound.strip(), pct, ms)
        elif name in CATEGORIES and not bound:
            categories.add(name)
        else:
            known = ", ".join([*CATEGORIES, "slower[=N%|=Nms]"])
            raise ValueError(f"--fail-on: {part[:40]!r} is not one of {known}")
    return FailOn(frozenset(categories), slower, pct, ms)


def _slower_bound(bound: str, pct: float, ms: float) -> tuple[float, float]:
    if not bound:
        return pct, ms
    match = _BOUND.match(bound)
    if match is None:
        raise ValueError(f"--fail-on: slower={bound[:20]!r}: use slower=20% or slower=50ms")
    value, unit = float(match.group(1)), match.group(2)
    if unit == "%":
        return value, ms
    return pct, value * (1000 if unit == "s" else 1)
