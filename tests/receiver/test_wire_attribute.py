"""Reading a string attribute straight off the wire agrees with protobuf's own parser."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tracekit.receiver._lazy_proto import string_attribute

values = st.one_of(
    st.builds(AnyValue, string_value=st.text(max_size=200)),
    st.builds(AnyValue, int_value=st.integers(-(2**63), 2**63 - 1)),
    st.builds(AnyValue, bool_value=st.booleans()),
    st.builds(AnyValue, double_value=st.floats(allow_nan=False)),
    st.just(AnyValue()),
)


@settings(max_examples=400, deadline=None)
@given(key=st.text(max_size=200), value=values)
def test_agrees_with_the_protobuf_parser_or_declines(key: str, value: AnyValue) -> None:
    raw = KeyValue(key=key, value=value).SerializeToString()
    read = string_attribute(raw)
    if read is not None:
        assert value.WhichOneof("value") == "string_value"
        assert read == (key, value.string_value)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=80))
def test_never_accepts_what_the_parser_would_refuse_or_read_differently(raw: bytes) -> None:
    read = string_attribute(raw)
    if read is None:
        return
    parsed = KeyValue()
    parsed.ParseFromString(raw)  # raises if the bytes are not a valid KeyValue
    assert read == (parsed.key, parsed.value.string_value)
    assert parsed.value.WhichOneof("value") == "string_value"


def test_the_common_shapes() -> None:
    short = KeyValue(key="http.route", value=AnyValue(string_value="/orders/{id}"))
    assert string_attribute(short.SerializeToString()) == ("http.route", "/orders/{id}")
    long_value = KeyValue(key="url.full", value=AnyValue(string_value="x" * 300))
    assert string_attribute(long_value.SerializeToString()) is None  # two-byte length
    number = KeyValue(key="server.port", value=AnyValue(int_value=8080))
    assert string_attribute(number.SerializeToString()) is None
    bad_utf8 = b"\x0a\x01k\x12\x03\x0a\x01\xff"
    assert string_attribute(bad_utf8) is None
