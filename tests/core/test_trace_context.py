"""W3C Trace Context: the cases of the spec and of its test suite (w3c/trace-context test/test.py).

Level 1 rules: an invalid traceparent restarts the trace and its tracestate is ignored; version 00
allows nothing after the flags; a higher version is parsed by the version-00 prefix when what
follows is a dash; version ff is invalid. tracestate, at the spec's current main: keys are
``(lcalpha / DIGIT) 0*255(keychar)`` where keychar includes ``@`` (the June 2026 grammar, which
replaced ``tenant@system``); values up to 256 printable characters without ``,`` and ``=`` ending
in a non-space; at most 32 members; an invalid member or a 33rd distinct member drops the whole
list; a repeated key keeps its first member; empty members and OWS are fine.
Level 2: the random flag (0x02) is kept when the trace is continued.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry.sdk.trace import TracerProvider

from tracekit import propagation

TRACE = "12345678901234567890123456789012"
SPAN = "1234567890123456"
VALID = f"00-{TRACE}-{SPAN}-01"

KEY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-*/"
VALUE_CHARS = "".join(chr(c) for c in [*range(0x20, 0x2C), *range(0x2D, 0x3D), *range(0x3E, 0x7F)])

# (traceparent header values, continued?) — None in place of a list: header absent
TRACEPARENTS: list[tuple[str, list[str], bool]] = [
    ("valid sampled", [VALID], True),
    ("valid not sampled", [f"00-{TRACE}-{SPAN}-00"], True),
    ("version 00 trailing dot", [VALID + "."], False),
    ("version 00 extra field", [VALID + "-what-the-future-will-be-like"], False),
    ("future version", [f"cc-{TRACE}-{SPAN}-01"], True),
    ("future version extra field", [f"cc-{TRACE}-{SPAN}-01-what-the-future-will-be-like"], True),
    ("future version no dash", [f"cc-{TRACE}-{SPAN}-01.what-the-future-will-be-like"], False),
    ("version ff", [f"ff-{TRACE}-{SPAN}-01"], False),
    ("version illegal char 1", [f".0-{TRACE}-{SPAN}-01"], False),
    ("version illegal char 2", [f"0.-{TRACE}-{SPAN}-01"], False),
    ("version too long", [f"000-{TRACE}-{SPAN}-01"], False),
    ("version too short", [f"0-{TRACE}-{SPAN}-01"], False),
    ("version uppercase", [f"0A-{TRACE}-{SPAN}-01"], False),
    ("trace id all zero", [f"00-{'0' * 32}-{SPAN}-01"], False),
    ("trace id illegal char", [f"00-.{TRACE[1:]}-{SPAN}-01"], False),
    ("trace id uppercase", [f"00-{TRACE[:-1]}A-{SPAN}-01"], False),
    ("trace id too long", [f"00-{TRACE}3-{SPAN}-01"], False),
    ("trace id too short", [f"00-{TRACE[:-1]}-{SPAN}-01"], False),
    ("parent id all zero", [f"00-{TRACE}-{'0' * 16}-01"], False),
    ("parent id illegal char", [f"00-{TRACE}-{SPAN[:-1]}.-01"], False),
    ("parent id uppercase", [f"00-{TRACE}-{SPAN[:-1]}F-01"], False),
    ("parent id too long", [f"00-{TRACE}-{SPAN}7-01"], False),
    ("parent id too short", [f"00-{TRACE}-{SPAN[:-1]}-01"], False),
    ("flags illegal char", [f"00-{TRACE}-{SPAN}-.0"], False),
    ("flags too long", [f"00-{TRACE}-{SPAN}-001"], False),
    ("flags too short", [f"00-{TRACE}-{SPAN}-1"], False),
    ("flags uppercase", [f"00-{TRACE}-{SPAN}-0A"], False),
    ("leading space", [" " + VALID], True),
    ("leading tab", ["\t" + VALID], True),
    ("trailing space", [VALID + " "], True),
    ("trailing tab", [VALID + "\t"], True),
    ("both OWS", ["\t " + VALID + " \t"], True),
    ("duplicated", [f"00-{TRACE[:-1]}1-{SPAN}-01", VALID], False),
    ("duplicated identical", [VALID, VALID], False),
    ("empty", [""], False),
    ("absent", [], False),
]


def extract(headers: dict[str, Any]) -> trace.SpanContext:
    context = propagation.TracekitPropagator().extract(headers, getter=propagation.HeaderGetter())
    return trace.get_current_span(context).get_span_context()


@pytest.mark.parametrize(("case", "values", "continued"), TRACEPARENTS, ids=lambda v: str(v))
def test_traceparent_table(case: str, values: list[str], continued: bool) -> None:
    headers: dict[str, Any] = {"traceparent": values, "tracestate": ["foo=1"]} if values else {}
    parent = extract(headers)

    assert parent.is_valid is continued, case
    if continued:
        assert f"{parent.trace_id:032x}" == TRACE
        assert f"{parent.span_id:016x}" == SPAN
        assert parent.trace_state.get("foo") == "1"
    else:
        assert len(parent.trace_state) == 0  # tracestate is never parsed without a traceparent


def test_future_version_is_downgraded_to_00_on_inject() -> None:
    headers = {"traceparent": [f"cc-{TRACE}-{SPAN}-03-future"]}
    context = propagation.TracekitPropagator().extract(headers, getter=propagation.HeaderGetter())
    out: dict[str, str] = {}

    propagation.inject_trace_context(out, context)

    assert out["traceparent"] == f"00-{TRACE}-{SPAN}-03"


def test_unknown_flag_bits_are_not_sent() -> None:
    headers = {"traceparent": [f"00-{TRACE}-{SPAN}-ff"]}
    context = propagation.TracekitPropagator().extract(headers, getter=propagation.HeaderGetter())
    out: dict[str, str] = {}

    propagation.inject_trace_context(out, context)

    assert out["traceparent"].endswith("-03")  # sampled + random (Level 2) only


@pytest.mark.parametrize(
    ("trace_id", "span_id", "flags", "expected"),
    [
        (1, 2, 1, "00-00000000000000000000000000000001-0000000000000002-01"),
        (2**128 - 1, 2**64 - 1, 0xFF, f"00-{'f' * 32}-{'f' * 16}-03"),
        (int(TRACE, 16), int(SPAN, 16), 0, f"00-{TRACE}-{SPAN}-00"),
        # out of range (no SDK makes one): written in full as ever, so the header is invalid
        (2**128, 1, 1, f"00-1{'0' * 32}-0000000000000001-01"),
    ],
)
def test_traceparent_is_written_with_padded_lower_case_ids(
    trace_id: int, span_id: int, flags: int, expected: str
) -> None:
    assert propagation.format_traceparent(trace_id, span_id, flags) == expected


@pytest.mark.parametrize(("incoming", "random"), [("01", False), ("03", True)])
def test_random_flag_of_level_2_follows_the_continued_trace(incoming: str, random: bool) -> None:
    tracer = TracerProvider().get_tracer("test")
    headers = {"traceparent": [f"00-{TRACE}-{SPAN}-{incoming}"]}
    parent = propagation.TracekitPropagator().extract(headers, getter=propagation.HeaderGetter())
    span = tracer.start_span("child", context=parent)
    out: dict[str, str] = {}

    propagation.inject_trace_context(out, trace.set_span_in_context(span, parent))

    flags = int(out["traceparent"][-2:], 16)
    assert out["traceparent"].startswith(f"00-{TRACE}-")
    assert out["traceparent"][36:52] != SPAN  # our span is the new parent
    assert bool(flags & propagation.RANDOM) is random
    assert flags & propagation.SAMPLED


@pytest.mark.parametrize(("incoming", "random"), [("01", False), ("03", True)])
def test_random_flag_follows_a_trace_continued_without_attaching_its_context(
    incoming: str, random: bool
) -> None:
    """``start_as_current_span(context=extracted)`` makes its span current in the context that
    was current, not in the extracted one; so is the span of a call made below it."""
    tracer = TracerProvider().get_tracer("test")
    trace_id = f"{secrets.randbits(127) + 1:032x}"
    parent = propagation.TracekitPropagator().extract(
        {"traceparent": [f"00-{trace_id}-{SPAN}-{incoming}"]}, getter=propagation.HeaderGetter()
    )
    out: dict[str, str] = {}
    with (
        tracer.start_as_current_span("process", context=parent),
        tracer.start_as_current_span("call"),
    ):
        propagation.inject_trace_context(out)

    assert out["traceparent"].startswith(f"00-{trace_id}-")
    assert bool(int(out["traceparent"][-2:], 16) & propagation.RANDOM) is random


def test_new_root_trace_sets_the_random_flag() -> None:
    span = TracerProvider().get_tracer("test").start_span("root")
    out: dict[str, str] = {}

    propagation.inject_trace_context(out, trace.set_span_in_context(span))

    assert int(out["traceparent"][-2:], 16) & propagation.RANDOM


# (tracestate header values, expected members or None when the whole list is dropped)
def _members(n: int) -> str:
    return ",".join(f"bar{i:02d}={i:02d}" for i in range(1, n + 1))


TRACESTATES: list[tuple[str, list[str], list[tuple[str, str]] | None]] = [
    ("two members", ["foo=1,bar=2"], [("foo", "1"), ("bar", "2")]),
    (
        "several headers keep order",
        ["foo=1,bar=2", "rojo=1,congo=2", "baz=3"],
        [("foo", "1"), ("bar", "2"), ("rojo", "1"), ("congo", "2"), ("baz", "3")],
    ),
    ("empty header", [""], []),
    ("empty then member", ["", "foo=1"], [("foo", "1")]),
    ("member then empty", ["foo=1", ""], [("foo", "1")]),
    ("empty members", ["foo=1,,, ,\t,bar=2"], [("foo", "1"), ("bar", "2")]),
    (
        "OWS around members",
        ["foo=1 \t , \t bar=2, \t baz=3"],
        [("foo", "1"), ("bar", "2"), ("baz", "3")],
    ),
    ("OWS tabs", ["foo=1\t \t,\t \tbar=2,\t \tbaz=3"], [("foo", "1"), ("bar", "2"), ("baz", "3")]),
    ("leading space", [" foo=1"], [("foo", "1")]),
    ("trailing tab", ["foo=1\t"], [("foo", "1")]),
    ("value with inner and leading space", ["foo= a b"], [("foo", " a b")]),
    (
        "all key characters",
        [KEY_CHARS[:26] + KEY_CHARS + "=1"],
        [(KEY_CHARS[:26] + KEY_CHARS, "1")],
    ),
    ("all value characters", ["foo=" + VALUE_CHARS], [("foo", VALUE_CHARS)]),
    ("tenant@system", ["tenant1@vendor=x"], [("tenant1@vendor", "x")]),
    (
        "tenant with all characters",
        [KEY_CHARS + "@a-z0-9_-*/=1"],
        [(KEY_CHARS + "@a-z0-9_-*/", "1")],
    ),
    ("tenant may start with digit", ["1tenant@sys=v"], [("1tenant@sys", "v")]),
    ("256-character key", ["foo=1", "z" * 256 + "=1"], [("foo", "1"), ("z" * 256, "1")]),
    ("257-character key", ["foo=1", "z" * 257 + "=1"], None),
    (
        "241-char tenant, 14-char system",
        ["foo=1", "t" * 241 + "@" + "v" * 14 + "=1"],
        [("foo", "1"), ("t" * 241 + "@" + "v" * 14, "1")],
    ),
    # June 2026 grammar: '@' is a key character anywhere after the first; 256 characters in all.
    (
        "242 characters before @",
        ["foo=1", "t" * 242 + "@v=1"],
        [("foo", "1"), ("t" * 242 + "@v", "1")],
    ),
    (
        "15 characters after @",
        ["foo=1", "t@" + "v" * 15 + "=1"],
        [("foo", "1"), ("t@" + "v" * 15, "1")],
    ),
    ("digit after @", ["t@1v=1"], [("t@1v", "1")]),
    (
        "256 characters with @",
        ["z" * 128 + "@" + "z" * 127 + "=1"],
        [("z" * 128 + "@" + "z" * 127, "1")],
    ),
    ("257 characters with @", ["foo=1", "z" * 128 + "@" + "z" * 128 + "=1"], None),
    (
        "32 members",
        [
            _members(10),
            _members(20)[len(_members(10)) + 1 :],
            _members(30)[len(_members(20)) + 1 :],
            "bar31=31,bar32=32",
        ],
        [(f"bar{i:02d}", f"{i:02d}") for i in range(1, 33)],
    ),
    ("33 members", [_members(33)], None),
    # A repeated key is inherited, not a reason to drop the list: the first member is kept.
    ("duplicate key", ["foo=1,foo=1"], [("foo", "1")]),
    ("duplicate key different values", ["foo=1,foo=2"], [("foo", "1")]),
    ("duplicate key across headers", ["foo=1", "foo=2"], [("foo", "1")]),
    (
        "duplicate key among others",
        ["a=1,foo=1,b=2", "foo=2,c=3"],
        [("a", "1"), ("foo", "1"), ("b", "2"), ("c", "3")],
    ),
    (
        "33 members of which one repeated",
        [_members(32) + ",bar01=x"],
        [(f"bar{i:02d}", f"{i:02d}") for i in range(1, 33)],
    ),
    ("space inside key", ["foo =1"], None),
    ("uppercase key", ["FOO=1"], None),
    ("dot in key", ["foo.bar=1"], None),
    ("key starting with digit", ["1foo=1"], [("1foo", "1")]),
    ("key starting with @", ["@foo=1,bar=2"], None),
    ("ending in @", ["foo@=1,bar=2"], [("foo@", "1"), ("bar", "2")]),
    ("double at", ["foo@@bar=1,bar=2"], [("foo@@bar", "1"), ("bar", "2")]),
    ("two ats", ["foo@bar@baz=1,bar=2"], [("foo@bar@baz", "1"), ("bar", "2")]),
    ("equals in value", ["foo=bar=baz"], None),
    ("empty value", ["foo=,bar=3"], None),
    ("value ending in space only", ["foo= "], None),
    ("257-character value", ["foo=" + "v" * 257], None),
    ("256-character value", ["foo=" + "v" * 256], [("foo", "v" * 256)]),
    ("non-ASCII value", ["foo=caf\u00e9"], None),
    ("control character", ["foo=a\x01b"], None),
    ("no equals", ["foo"], None),
]


@pytest.mark.parametrize(("case", "values", "expected"), TRACESTATES, ids=lambda v: str(v)[:40])
def test_tracestate_table(case: str, values: list[str], expected: Any) -> None:
    assert propagation.parse_tracestate(values) == expected, case
    parent = extract({"traceparent": [VALID], "tracestate": values})
    assert parent.is_valid  # a bad tracestate never affects traceparent
    assert list(parent.trace_state.items()) == (expected or [])


def test_tracestate_round_trips_unchanged_when_we_do_not_mutate_it() -> None:
    members = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,tenant@vendor=  spaced"
    parent = propagation.TracekitPropagator().extract(
        {"traceparent": [VALID], "tracestate": [members]}, getter=propagation.HeaderGetter()
    )
    out: dict[str, str] = {}

    propagation.inject_trace_context(out, parent)

    assert out["tracestate"] == members


def test_updated_entry_moves_to_the_front() -> None:
    members = propagation.parse_tracestate(["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"])
    assert members is not None

    updated = propagation.update_tracestate(members, "congo", "ucfJifl5GOE")
    added = propagation.update_tracestate(updated, "tracekit", "new")

    assert propagation.format_tracestate(updated) == "congo=ucfJifl5GOE,rojo=00f067aa0ba902b7"
    assert propagation.format_tracestate(added).startswith("tracekit=new,congo=ucfJifl5GOE,")


def test_adding_a_33rd_member_drops_from_the_end() -> None:
    members = propagation.parse_tracestate([_members(32)])
    assert members is not None

    updated = propagation.update_tracestate(members, "tracekit", "x")

    assert len(updated) == 32
    assert updated[0] == ("tracekit", "x")
    assert ("bar32", "32") not in updated


@pytest.mark.parametrize(("key", "value"), [("Bad", "x"), ("ok", "a,b"), ("ok", ""), ("ok", "x=y")])
def test_update_rejects_invalid_members(key: str, value: str) -> None:
    with pytest.raises(ValueError):
        propagation.update_tracestate([], key, value)


BAGGAGE_CASES = [
    ("members and properties", ["a=1,b=two%20words;prop=x"], {"a": "1", "b": "two words"}),
    ("several headers combine", ["a=1", "b=2"], {"a": "1", "b": "2"}),
    ("empty members are skipped", [" , a=1 ,, "], {"a": "1"}),
    ("no equals sign: that member dropped", ["a=1,oops"], {"a": "1"}),
    ("bad key: that member dropped", ['a=1,"k"=2'], {"a": "1"}),
    ("control characters: dropped", ["a=1\r\nX-Injected: yes"], {}),
    ("log injection text: dropped", ["a=1,k=\x1b[31mFAKE ERROR\x1b[0m"], {"a": "1"}),
    ("a member cut at 8192 bytes: dropped", ["k=" + "v" * 9000], {}),
    (
        "over 64 members: the first 64 kept",
        [",".join(f"k{i}=v" for i in range(181))],
        {f"k{i}": "v" for i in range(64)},
    ),
]


@pytest.mark.parametrize(("case", "values", "expected"), BAGGAGE_CASES, ids=lambda v: str(v)[:30])
def test_incoming_baggage_is_parsed_strictly_and_never_logged(
    case: str, values: list[str], expected: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    context = propagation.TracekitPropagator().extract({"baggage": values})

    assert dict(baggage.get_all(context)) == expected
    for value in values:
        for record in caplog.records:
            assert value not in record.getMessage()
            assert "FAKE ERROR" not in record.getMessage()


@pytest.mark.parametrize("members", ["foo@=1,bar=2", "foo@bar@baz=1,1x=2", "foo=1,foo=2"])
def test_new_grammar_keys_and_duplicates_travel_through_an_sdk_span_silently(
    members: str, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenTelemetry's TraceState predates the grammar: it would drop these keys, and log them."""
    caplog.set_level(logging.DEBUG)
    parent = extract({"traceparent": [VALID], "tracestate": [members]})
    span = (
        TracerProvider()
        .get_tracer("test")
        .start_span("child", context=trace.set_span_in_context(trace.NonRecordingSpan(parent)))
    )
    out: dict[str, str] = {}

    propagation.inject_trace_context(out, trace.set_span_in_context(span))

    assert out["tracestate"] == propagation.format_tracestate(
        propagation.parse_tracestate([members]) or []
    )
    assert out["tracestate"].split(",")[0] == members.split(",")[0]
    assert caplog.records == []
