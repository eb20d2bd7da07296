"""Numbers read from untrusted text: a header, an attribute, an environment variable.

``str.isdigit`` is true of characters ``int`` does not read ("²", and other superscripts), and
``int`` reads a number of any length, slowly past a few thousand digits: each of these failed
some part of tracekit with a ``ValueError`` once. A number here is a few ASCII digits.
"""

from __future__ import annotations


def ascii_int(value: object, max_digits: int) -> int | None:
    """``value`` as an int when it is a string of 1 to ``max_digits`` ASCII digits, else None."""
    if isinstance(value, str) and 0 < len(value) <= max_digits and value.isascii():
        return int(value) if value.isdigit() else None
    return None
