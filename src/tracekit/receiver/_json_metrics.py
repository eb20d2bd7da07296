"""OTLP/JSON metrics, acknowledged and dropped without being built, as protobuf's are.

The collector stores no metrics (they belong in Prometheus), so their data points are never read:
protobuf's stay bytes (``_protobuf.decode_metrics``). ``json.loads`` built every data point,
attribute and bucket only to drop them, so the element count had to take them into account, and
a JSON export of 120,000 data points got 413 where the same request in protobuf was acknowledged.
Here the outer levels (the request, each resource's and each scope's metrics) are walked and
checked, and each metric is matched whole by its brackets and strings, at the regex engine's
speed, and dropped unparsed. Every member and item walked counts against the request's
elements, so a body of millions of empty ones is refused (413) as protobuf's is. What a metric
holds is checked no further than its strings and the nesting of its brackets (a ``]`` may close
a ``{``), as protobuf's Metric bytes are not checked at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from tracekit.receiver._decoded import Admit, Decoded, MalformedRequest, admit_any
from tracekit.receiver._errors import RequestError

__all__ = ["decode_metrics", "walk_metrics"]

_STRING = rb'"(?:[^"\\]++|\\.)*+"'
_OTHER = rb'[^"\[\]{}]++'  # numbers, literals, commas, colons, white space
# brackets a metric may nest: an attribute value of tracekit's deepest (32 levels, 4 brackets each)
_MAX_BRACKETS = 160


def _nested(depth: int) -> bytes:
    """What may sit between a pair of brackets: strings, anything but brackets, and pairs of
    brackets nested ``depth - 1`` deep at most (Python's regexes cannot recurse)."""
    inside = rb"(?:" + _OTHER + rb"|" + _STRING + rb")*+"
    for _ in range(depth - 1):
        inside = rb"(?:" + _OTHER + rb"|" + _STRING + rb"|[\[{]" + inside + rb"[\]}])*+"
    return inside


_SPACE = re.compile(rb"\s*+")
_KEY = re.compile(rb"\s*+(" + _STRING + rb")\s*+:")
# one value, never built: a string, a bracketed value, or a number or literal
_VALUE = re.compile(
    rb"\s*+(?:" + _STRING + rb"|[\[{]" + _nested(_MAX_BRACKETS) + rb"[\]}]|[-+.\w]++)"
)
_RESOURCES = (b'"resourceMetrics"', b'"resource_metrics"')
_SCOPES = (b'"scopeMetrics"', b'"scope_metrics"')


def decode_metrics(body: bytes | bytearray, admit: Admit = admit_any) -> Decoded:
    """Metrics are checked for shape and acknowledged, never stored."""
    out = Decoded()
    out.total = walk_metrics(body, len(body))
    return out


def walk_metrics(body: bytes | bytearray, most: int) -> int:
    """The number of metrics in the request; 413 past ``most`` members and items walked."""
    walk = _Walk(body, most)
    count = 0
    for key in walk.members("body"):
        if key in _RESOURCES:
            for _ in walk.items("resourceMetrics"):
                count += _resource(walk)
        else:
            walk.skip()
    walk.end()
    return count


def _resource(walk: _Walk) -> int:
    count = 0
    for key in walk.members("resourceMetrics[]"):
        if key in _SCOPES:
            for _ in walk.items("scopeMetrics"):
                count += _scope(walk)
        else:
            walk.skip()
    return count


def _scope(walk: _Walk) -> int:
    count = 0
    for key in walk.members("scopeMetrics[]"):
        if key == b'"metrics"':
            for _ in walk.items("metrics"):
                walk.skip()
                count += 1
        else:
            walk.skip()
    return count


class _Walk:
    """A position in the body, moved over the outer levels' members and items."""

    def __init__(self, body: bytes | bytearray, most: int) -> None:
        self.body = body
        self.pos = 0
        self.most = self.left = most

    def members(self, where: str) -> Iterator[bytes]:
        """Each key of the object here (null is an empty one), left at its value."""
        if self._null():
            return
        if not self._take(b"{"):
            raise MalformedRequest(f"{where} must be an object")
        if self._take(b"}"):
            return
        while True:
            found = _KEY.match(self.body, self.pos)
            if found is None:
                raise _malformed()
            self.pos = found.end()
            self._count()
            yield found.group(1)
            if not self._take(b","):
                self._expect(b"}")
                return

    def items(self, where: str) -> Iterator[None]:
        """Each item of the array here (null is an empty one), left at it."""
        if self._null():
            return
        if not self._take(b"["):
            raise MalformedRequest(f"{where} must be an array")
        if self._take(b"]"):
            return
        while True:
            self._count()
            yield
            if not self._take(b","):
                self._expect(b"]")
                return

    def skip(self) -> None:
        """Step over the value here, unparsed."""
        found = _VALUE.match(self.body, self.pos)
        if found is None:
            raise _malformed()
        self.pos = found.end()

    def end(self) -> None:
        """Nothing but white space may follow the request."""
        self._space()
        if self.pos != len(self.body):
            raise _malformed()

    def _count(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise RequestError(
                413, f"more than {self.most} JSON members and metrics in one request;"
                " send smaller batches",
            )  # fmt: skip

    def _space(self) -> None:
        found = _SPACE.match(self.body, self.pos)
        self.pos = self.pos if found is None else found.end()

    def _take(self, char: bytes) -> bool:
        self._space()
        if self.body[self.pos : self.pos + 1] != char:
            return False
        self.pos += 1
        return True

    def _expect(self, char: bytes) -> None:
        if not self._take(char):
            raise _malformed()

    def _null(self) -> bool:
        self._space()
        if self.body[self.pos : self.pos + 4] != b"null":
            return False
        self.pos += 4
        return True


def _malformed() -> MalformedRequest:
    return MalformedRequest(
        f"body is not valid JSON (or a metric nests more than {_MAX_BRACKETS} brackets)"
    )
