"""Picking one attribute's value out of many stored attribute texts at once.

Stored attributes are JSON lists ``[k1, v1, k2, v2, ...]`` (see ``_encoding``: a negative key
says the value is an interned string id). Decoding 200,000 of them costs about a second; one
pattern run over all of them joined by newlines (their JSON text holds none) costs a tenth of
that. The pattern walks whole key,value pairs from the opening bracket, so a value that happens
to equal the key's id is never taken for the key. Texts it cannot walk (a list or map value
before the key) are decoded one by one.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any

__all__ = ["Picked", "TextBatch", "ValuePicker"]

# One JSON scalar: anything up to the next separator, or a string (with escapes). Possessive:
# a token never gives characters back, which spares the engine backtracking on every pair.
_TOKEN = r'(?:[^,\[\]{}"\n]++|"(?:[^"\\]|\\.)*+")'  # noqa: S105 - a pattern, not a password

Picked = tuple[bool, str]  # (the value is an interned string id, the value's JSON text)


class TextBatch:
    """Attribute texts of many rows, joined once for every picker that reads them."""

    def __init__(self, texts: Sequence[str | None]) -> None:
        self.texts = [text or "" for text in texts]
        self.joined = "\n".join(self.texts)
        self._starts: list[int] | None = None

    def line_of(self, offset: int) -> int:
        """Index of the text that holds character ``offset`` of ``joined``."""
        if self._starts is None:
            # every text and its newline: len + 1, summed without a Python-level loop
            self._starts = [0, *accumulate(map((1).__add__, map(len, self.texts)))]
        return bisect_right(self._starts, offset) - 1


class ValuePicker:
    """The value of the attribute whose key has id ``key_ref`` (None: no text can hold it)."""

    def __init__(self, key_ref: int | None) -> None:
        self.key_ref = key_ref
        walk = rf"\[(?:{_TOKEN},{_TOKEN},)*?(-?){key_ref},({_TOKEN})[,\]]"
        self._one = re.compile(walk)
        # Every line matches exactly once: the walk, or nothing (the empty alternative).
        self._every = re.compile(rf"^(?:{walk}|)[^\n]*$", re.MULTILINE)

    def pick_all(self, batch: TextBatch) -> list[Picked | None]:
        """The value in each text of ``batch``, in order (None where it is absent)."""
        if self.key_ref is None:
            return [None] * len(batch.texts)
        found = self._every.findall(batch.joined)
        if len(found) != len(batch.texts):  # cannot happen for JSON text; stay correct anyway
            return [self.pick(text) for text in batch.texts]
        picked: list[Picked | None] = [
            (sign == "-", token) if token else None for sign, token in found
        ]
        for index, text in enumerate(batch.texts):
            if picked[index] is None and _nested(text):
                picked[index] = self._pick_decoded(text)
        return picked

    def lines_where(
        self, batch: TextBatch, value_pattern: str, accept: Callable[[Picked], bool]
    ) -> list[int]:
        """Indexes of the texts whose value is accepted; ``value_pattern`` finds candidates.

        ``value_pattern`` (a regex over the value's stored text, an interned id included) only
        has to match every value ``accept`` accepts. The scan starts with the key's digits, which
        lets the regex engine skip ahead by plain string search; each candidate is then confirmed
        by walking its pairs.
        """
        if self.key_ref is None:
            return []
        quick = re.compile(rf"{abs(self.key_ref)},(?:{value_pattern})[,\]]")
        candidates = sorted({batch.line_of(m.start()) for m in quick.finditer(batch.joined)})
        return [
            index
            for index in candidates
            if (found := self.pick(batch.texts[index])) is not None and accept(found)
        ]

    def pick(self, text: str) -> Picked | None:
        """The value in one text."""
        if self.key_ref is None:
            return None
        found = self._one.match(text)
        if found is not None:
            return found.group(1) == "-", found.group(2)
        return self._pick_decoded(text) if _nested(text) else None

    def _pick_decoded(self, text: str) -> Picked | None:
        try:
            items: Any = json.loads(text)
        except (ValueError, RecursionError):  # not the store's writing, or nested past decoding
            return None
        for index in range(0, len(items) - 1, 2):
            if items[index] in (self.key_ref, -(self.key_ref or 0)):
                return items[index] < 0, json.dumps(items[index + 1], sort_keys=True)
        return None


def _nested(text: str) -> bool:
    return "{" in text or "[" in text[1:]


def value_of(picked: Picked) -> Any:
    """The picked value decoded (an interned value is its string id); None if unreadable."""
    try:
        return json.loads(picked[1])
    except (ValueError, RecursionError):
        return None
