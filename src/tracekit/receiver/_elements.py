"""How many messages a request would build, counted before any of them is built.

A message costs the decoder the same whatever its size: an empty span event, attribute or
resource is two bytes on the wire, so 16 KiB of gzip held 8 million of them and took 2 GiB and
25 s of decoding, the other exporters waiting. A request is therefore refused (413) when it holds
more messages (every span, attribute, event, link, array item, resource...) than its share of the
memory budget pays for; what a default SDK batch holds is far below that.

A body of ``2 * most`` bytes or less cannot hold too many (a message takes at least two bytes),
so only larger bodies are counted: protobuf by walking its wire format without building anything,
JSON by its braces and brackets outside strings, but for an attribute's value: protobuf counts an
attribute as one message (its KeyValue), and so does JSON, or it would take half the attributes.
"""

from __future__ import annotations

import re
from typing import TypeAlias

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from tracekit.receiver._decoded import MalformedRequest
from tracekit.receiver._errors import RequestError
from tracekit.receiver._json_metrics import walk_metrics

__all__ = ["check_elements"]

# field number -> (whether it repeats, the layout of the message it holds); only fields that hold
# messages. Only a repeated field's messages are counted: more of a field that does not repeat
# merge into one (what they hold that repeats is counted as they are walked).
_Layout: TypeAlias = dict[int, tuple[bool, "_Layout"]]
_MAX_DEPTH = 100  # what protobuf's own parser allows
# Fields walked per element allowed: a span has about 11 of its own, an attribute 3 (measured per
# element: a 512-span SDK batch 4.1, 8,192 spans of 20 attributes 4.2, 33,700 spans of two 4.7,
# spans without attributes 11, but those are held to 54,613 by the records cap)
_FIELDS_PER_ELEMENT = 8
# A JSON string, or an unterminated one running to the end (so that no match ever fails and
# backtracks: the scan stays linear whatever the body); or the key "value" with the brace of
# the object it holds, a KeyValue's AnyValue (see _count_json)
_JSON_STRING = re.compile(rb'"value"\s*+:\s*+\{|"(?:[^"\\]++|\\.)*+(?:"|\Z)', re.DOTALL)
_LENGTH_DELIMITED, _VARINT, _FIXED64, _FIXED32 = 2, 0, 1, 5


class _TooMany(Exception):
    pass


class _Unframed(MalformedRequest):
    """A message whose fields run past its end: protobuf's parser refuses it too."""


def _layout(descriptor: Descriptor, known: dict[str, _Layout]) -> _Layout:
    found = known.get(descriptor.full_name)
    if found is None:
        found = known[descriptor.full_name] = {}
        for field in descriptor.fields:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                found[field.number] = (_repeats(field), _layout(field.message_type, known))
    return found


def _repeats(field: FieldDescriptor) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf 6 and later (7 has no label)
        return bool(field.is_repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


_LAYOUTS: dict[str, _Layout] = {
    "traces": _layout(ExportTraceServiceRequest.DESCRIPTOR, {}),
    "logs": _layout(ExportLogsServiceRequest.DESCRIPTOR, {}),
    # metrics are dropped unread (see _protobuf.decode_metrics): what is inside one costs nothing
    "metrics": _layout(ExportMetricsServiceRequest.DESCRIPTOR, {Metric.DESCRIPTOR.full_name: {}}),
}


def check_elements(body: bytes | bytearray, protobuf: bool, signal: str, most: int) -> None:
    """413 when ``body`` holds more than ``most`` messages; 400 when it cannot be framed."""
    if len(body) <= 2 * most:
        return
    try:
        if protobuf:
            _Counter(body, most).walk(0, len(body), _LAYOUTS[signal], 0)
        elif signal == "metrics":  # dropped unbuilt: only what holds the metrics is counted
            walk_metrics(body, most)
        else:
            _count_json(body, most)
    except _TooMany as error:
        raise RequestError(413, f"{error} in one request; send smaller batches") from None


class _Counter:
    """Walks the protobuf wire format, counting the messages of repeated fields."""

    def __init__(self, data: bytes | bytearray, most: int) -> None:
        self.data = data
        self.most = self.left = most
        # fields walked, counted or not (a scalar, an unknown field, a status repeated): the
        # walk's own cost is bounded too. A request within ``most`` holds far fewer.
        self.fields = self.fields_left = _FIELDS_PER_ELEMENT * most

    def walk(self, pos: int, end: int, layout: _Layout, depth: int) -> None:
        """Count what ``data[pos:end]``, a message of ``layout``, holds (written for speed:
        one-byte tags and lengths, nearly all of them, are read inline)."""
        data = self.data
        while pos < end:
            self.fields_left -= 1
            if self.fields_left < 0:
                raise _TooMany(f"more than {self.fields} protobuf fields")
            tag = data[pos]
            pos += 1
            if tag > 0x7F:
                tag, pos = self._varint(pos - 1, end)
            wire = tag & 7
            if wire == _LENGTH_DELIMITED:
                size = data[pos] if pos < end else 0x80
                pos += 1
                if size > 0x7F:
                    size, pos = self._varint(pos - 1, end)
                if pos + size > end:
                    raise _malformed()
                found = layout.get(tag >> 3)
                if found is not None:
                    if found[0]:
                        self.left -= 1
                        if self.left < 0:
                            raise self._too_many()
                    if found[1]:
                        self._walk_inside(pos, pos + size, found[1], depth + 1)
                pos += size
            elif wire == _VARINT:
                pos = self._varint(pos, end)[1]
            elif wire in (_FIXED64, _FIXED32):
                pos += 8 if wire == _FIXED64 else 4
            else:  # groups: never in OTLP, and skipped by protobuf's parser: refused whole
                raise MalformedRequest("body is not a valid OTLP protobuf message (a group)")
        if pos != end:
            raise _malformed()

    def _walk_inside(self, pos: int, end: int, layout: _Layout, depth: int) -> None:
        """Walk a nested message; one that is malformed is the decoder's to refuse, which
        rejects its record alone (a span whose event is corrupt): its count stops there. So does
        the decoder refuse alone a record nesting deeper than protobuf parses, where refusing the
        request lost every record of a batch over ``2 * most`` bytes beside it: such a message is
        not walked, but counted as the most it could hold (a message takes two bytes at least)."""
        if depth > _MAX_DEPTH:
            self.left -= (end - pos) // 2
            if self.left < 0:
                raise self._too_many()
            return
        try:  # noqa: SIM105  (suppress() would cost a call per attribute; try costs nothing)
            self.walk(pos, end, layout, depth)
        except _Unframed:  # not a group or a nesting too deep, which protobuf's parser accepts
            pass  # or which refuse the whole request: its messages would not have been counted

    def _too_many(self) -> _TooMany:
        return _TooMany(f"more than {self.most} spans, attributes, events and other elements")

    def _varint(self, pos: int, end: int) -> tuple[int, int]:
        data, value, shift = self.data, 0, 0
        while pos < end and shift < 70:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos
            shift += 7
        raise _malformed()


def _malformed() -> MalformedRequest:
    return _Unframed("body is not a valid OTLP protobuf message")


def _count_json(body: bytes | bytearray, most: int) -> None:
    """Objects and arrays are counted by their braces and brackets outside strings, but for an
    attribute's value: part of its KeyValue, as in protobuf, its brace goes with the key."""
    outside = _JSON_STRING.sub(b"", body)
    if outside.count(b"{") + outside.count(b"[") > most:
        raise _TooMany(f"more than {most} JSON objects and arrays")
