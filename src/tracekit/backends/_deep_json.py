"""JSON decoding that survives a value nested deeper than Python's decoder can go.

Python's ``json`` recurses once per array or object and raises RecursionError near a thousand
levels deep, so one attribute value a sender nested a few hundred ``arrayValue``s deep (three
levels of JSON each) cost the whole answer of Tempo or Jaeger, every other trace and span in it.
Such an answer is decoded again with every array and object opened deeper than ``MAX_DEPTH``
replaced by ``null``: an answer's own structure and any attribute value tracekit reads (32
levels, ``_otlp_json.MAX_VALUE_DEPTH``) lie well above that, so what is cut off is only inside
a value the attribute reader then refuses, leaving that attribute out and the rest of its span.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_DEPTH", "loads"]

MAX_DEPTH = 200
# a string (whose brackets are text), or a bracket
_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]', re.DOTALL)


def loads(text: str, parse_int: Callable[[str], Any]) -> Any:
    """``json.loads(text)``, values nested past ``MAX_DEPTH`` read as null; ValueError for
    text that is not JSON, as ``json.loads`` raises it, and for text nested too deep that is no
    JSON object once cut (every answer of Tempo and Jaeger is one: brackets alone are none)."""
    try:
        return json.loads(text, parse_int=parse_int)
    except RecursionError:
        document = json.loads(cut_below(text, MAX_DEPTH), parse_int=parse_int)
    if not isinstance(document, dict):
        raise ValueError("nested too deep, and no JSON object")
    return document


def cut_below(text: str, most: int) -> str:
    """``text`` with every array and object opened deeper than ``most`` replaced by ``null``."""
    pieces: list[str] = []
    depth = kept_until = cut_from = 0
    for token in _TOKEN.finditer(text):
        bracket = token.group()
        if bracket in ("[", "{"):
            depth += 1
            if depth == most + 1:
                cut_from = token.start()
        elif bracket in ("]", "}"):
            if depth == most + 1:
                pieces += [text[kept_until:cut_from], "null"]
                kept_until = token.end()
            depth -= 1
    return "".join(pieces) + text[kept_until:]
