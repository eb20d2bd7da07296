"""Go's ``time.ParseDuration``, rule for rule, with its error messages: what Jaeger's api_v3 and
Tempo's TraceQL lexer run on a duration tracekit sends (written from Go's documented grammar:
an optional sign, then decimal numbers each followed by a unit, ``0`` alone allowed)."""

from __future__ import annotations

import json

UNITS = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,
    "μs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}


def parse_duration(text: str) -> int:
    """Nanoseconds; ValueError with the message Go's ``time.ParseDuration`` gives."""
    rest, sign = text, 1
    if rest[:1] in ("-", "+"):
        sign, rest = (-1 if rest[0] == "-" else 1), rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"time: invalid duration {quote(text)}")
    total = 0.0
    while rest:
        number, rest = _number(rest, text)
        unit, rest = _unit(rest)
        if not unit:
            raise ValueError(f"time: missing unit in duration {quote(text)}")
        if unit not in UNITS:
            raise ValueError(f"time: unknown unit {quote(unit)} in duration {quote(text)}")
        total += number * UNITS[unit]
    return sign * int(total)


def _number(rest: str, text: str) -> tuple[float, str]:
    digits = len(rest) - len(rest.lstrip("0123456789."))
    number = rest[:digits]
    if not number.strip(".") or number.count(".") > 1:
        raise ValueError(f"time: invalid duration {quote(text)}")
    return float(number), rest[digits:]


def _unit(rest: str) -> tuple[str, str]:
    end = next((i for i, c in enumerate(rest) if c == "." or c.isdigit()), len(rest))
    return rest[:end], rest[end:]


def quote(value: str) -> str:
    """Go's ``strconv.Quote`` for the plain text these messages carry."""
    return json.dumps(value, ensure_ascii=False)


def format_duration(nanos: int) -> str:
    """Go's ``time.Duration.String()`` (what ``%v`` prints): ``-6.5ms``, ``1.25s``, ``2m0.5s``."""
    sign, n = ("-" if nanos < 0 else ""), abs(nanos)
    if n == 0:
        return "0s"
    if n < 10**9:
        unit, size = next((u, s) for u, s in (("ns", 1), ("µs", 10**3), ("ms", 10**6))
                          if n < s * 1000)  # fmt: skip
        return sign + _decimal(n, size) + unit
    hours, rest = divmod(n, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    seconds = _decimal(rest, 10**9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    return f"{sign}{minutes}m{seconds}" if minutes else sign + seconds


def _decimal(n: int, size: int) -> str:
    whole, part = divmod(n, size)
    digits = str(part).rjust(len(str(size)) - 1, "0").rstrip("0") if size > 1 else ""
    return f"{whole}.{digits}" if digits else str(whole)
