"""The ``baggage`` header. Outgoing: what tracekit writes, W3C's reader (tracekit's) and
OpenTelemetry Python's reader both read back as it was set, within the W3C limits, and nothing
is logged about a member's content. Incoming: plain lists are split without the member-by-member
reader, with its result."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context

from tracekit import correlation, propagation
from tracekit._propagation import baggage as _baggage
from tracekit._runtime.ratelimit import RateLimitedWarning

CASES: dict[str, dict[str, Any]] = {
    "plain": {"tenant": "acme", "region": "eu-west-1"},
    "needs escaping": {"tenant": "acme corp", "path": "/a,b;c=d", "pct": "100%", "e": "ü"},
    "plus and space": {"user": "John Smith", "sum": "1+1"},
    "not text": {"count": 3, "ratio": 0.5, "flag": True},
    "empty value": {"empty": ""},
    "unreserved marks": {"a_b.c~d-e": "A_b.C~d-E"},
    "many members": {f"k{i}": f"v{i}" for i in range(63)},
    "one long member": {"blob": "x" * 5000, "after": "kept"},
    "correlation already there": {propagation.CORRELATION_BAGGAGE_KEY: "from-upstream"},
}
CIDS = [None, "order-1", "kong-uuid#42", "Root=1-5759e988;a:b/c+d"]


def _context(entries: dict[str, Any]) -> Context:
    context = Context()
    for key, value in entries.items():
        context = baggage.set_baggage(key, value, context)
    return context


def _written(entries: dict[str, Any], cid: str | None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    token = correlation.set_correlation_id(cid)
    try:
        propagation.TracekitPropagator().inject(carrier, _context(entries))
    finally:
        correlation.reset_correlation_id(token)
    return carrier


def _expected(entries: dict[str, Any], cid: str | None) -> dict[str, str]:
    """What a reader must get: every member as text, the request's correlation ID winning."""
    expected = {key: str(value) for key, value in entries.items()}
    if cid is not None:
        expected[propagation.CORRELATION_BAGGAGE_KEY] = cid
    return expected


@pytest.mark.parametrize("cid", CIDS)
@pytest.mark.parametrize("entries", CASES.values(), ids=CASES.keys())
def test_what_is_written_reads_back_as_it_was_set(
    entries: dict[str, Any], cid: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    written = _written(entries, cid)
    ours = dict(baggage.get_all(propagation.TracekitPropagator().extract(written)))
    assert ours == _expected(entries, cid)
    assert written.get("x-correlation-id") == cid
    assert not caplog.records
    if len(written.get("baggage", "")) <= 4096:  # OpenTelemetry's reader drops longer members
        theirs = dict(baggage.get_all(W3CBaggagePropagator().extract(written)))
        assert theirs == _expected(entries, cid)


def test_a_space_is_percent_encoded_and_baggage_octets_stay_as_they_are() -> None:
    """W3C Baggage: a value is percent-encoded UTF-8 ("%20" for a space; "+" is a plus)."""
    written = _written({"user": "John Smith", "path": "/a:b=c", "sum": "1+1"}, None)
    assert written["baggage"] == "user=John%20Smith,path=/a:b=c,sum=1%2B1"


def test_a_key_that_is_no_token_is_sent_percent_encoded_into_one() -> None:
    """W3C keys are tokens; OpenTelemetry Python's reader decodes the escapes back."""
    written = _written({"clé": "v", "a b": "w"}, None)
    assert written["baggage"] == "cl%C3%A9=v,a%20b=w"
    theirs = dict(baggage.get_all(W3CBaggagePropagator().extract(written)))
    assert theirs == {"clé": "v", "a b": "w"}


def test_a_header_received_is_sent_on_unchanged() -> None:
    received = {"baggage": "user=John%20Smith,blob=" + "x" * 5000 + ",ratio=1%2B1"}
    carrier: dict[str, str] = {}
    propagation.TracekitPropagator().inject(
        carrier, propagation.TracekitPropagator().extract(received)
    )
    assert carrier["baggage"] == received["baggage"]


def test_over_the_limits_the_correlation_member_stays_and_no_content_is_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    # (a fresh limiter: another test may have used this minute's warning)
    monkeypatch.setattr(_baggage, "dropped_members", RateLimitedWarning(60, "%s: %s"))
    entries = {f"SECRET-{i}": "v" * 100 for i in range(100)}  # about 11 KB
    header = _written(entries, "order-9")["baggage"]
    members = header.split(",")
    assert len(header) <= _baggage.MAX_BYTES
    assert f"{propagation.CORRELATION_BAGGAGE_KEY}=order-9" in members
    assert members[:-1] == [f"SECRET-{i}={'v' * 100}" for i in range(len(members) - 1)]
    assert "SECRET" not in caplog.text and "vvv" not in caplog.text
    assert "baggage" in caplog.text  # counted in a warning naming the header


def test_at_most_64_members_are_written_the_correlation_member_among_them() -> None:
    """64: what W3C Baggage asks every reader to propagate (and tracekit's reader keeps)."""
    header = _written({f"k{i}": "v" for i in range(300)}, "order-3")["baggage"]
    assert header.split(",") == [*(f"k{i}=v" for i in range(63)), "correlation.id=order-3"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_.]{0,8}", fullmatch=True),
                       st.text(max_size=20), max_size=10))  # fmt: skip
def test_any_text_reads_back_as_it_was_set(entries: dict[str, str]) -> None:
    written = _written(entries, None)
    assert dict(baggage.get_all(propagation.TracekitPropagator().extract(written))) == entries
    theirs = dict(baggage.get_all(W3CBaggagePropagator().extract(written)))
    assert theirs == {key: value.strip() for key, value in entries.items()}  # (it strips values)


def test_no_baggage_and_no_correlation_id_write_no_header() -> None:
    assert _written({}, None) == {}


def test_the_correlation_id_alone_is_one_member() -> None:
    assert _written({}, "order-7") == {
        "x-correlation-id": "order-7",
        "baggage": "correlation.id=order-7",
    }


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), st.just("x" * 9000)))
def test_the_correlation_id_alone_is_written_as_the_many_member_path_writes_it(cid: str) -> None:
    alone = _baggage.correlation_member(cid)
    assert alone == _baggage.header({propagation.CORRELATION_BAGGAGE_KEY: cid})


_TOKEN = st.text(alphabet="!#$%&'*+-.^_`|~azAZ09", min_size=1, max_size=6)
_OCTETS = st.text(alphabet="!#$%&'()*+-./:<=>?@[]^_`{|}~az09\"\\;, \t\u00e9", max_size=6)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(_TOKEN, _OCTETS), max_size=70), st.sampled_from([",", ", ", ",,"]))
def test_reading_plain_lists_quickly_changes_nothing(
    members: list[tuple[str, str]], separator: str
) -> None:
    header = separator.join(f"{key}={value}" for key, value in members)
    assert _baggage.parse([header]) == _baggage.parse_member_by_member(header)


def test_members_received_with_properties_are_sent_on_with_them() -> None:
    """W3C Baggage: a list member is its key, value and properties; a hop forwards it whole."""
    received = {"baggage": "user=John%20Smith;ttl=60;internal, ratio = 1%2B1 ; pii ,plain=1"}
    carrier: dict[str, str] = {}
    propagation.TracekitPropagator().inject(
        carrier, propagation.TracekitPropagator().extract(received)
    )
    assert carrier["baggage"] == "user=John%20Smith;ttl=60;internal,ratio=1%2B1;pii,plain=1"


def test_properties_stay_with_the_value_they_came_with() -> None:
    context = propagation.TracekitPropagator().extract(
        {"baggage": "user=alice;ttl=60,tier=gold;src=edge,bad=1;p=\x1b[2J"}
    )
    assert baggage.get_all(context) == {"user": "alice", "tier": "gold", "bad": "1"}
    context = baggage.set_baggage("user", "bob", context)  # a new value: the old ttl is not its
    carrier: dict[str, str] = {}
    propagation.TracekitPropagator().inject(carrier, context)
    assert carrier["baggage"] == "user=bob,tier=gold;src=edge,bad=1"


@pytest.mark.parametrize(
    ("received", "sent"),
    [("k=1;a,k=2;b", "k=2;b"), ("k=1;a,k=1", "k=1"), ("k=1,k=1;b", "k=1;b")],
)
def test_of_a_key_repeated_the_last_member_goes_on_whole(received: str, sent: str) -> None:
    carrier: dict[str, str] = {}
    propagator = propagation.TracekitPropagator()
    propagator.inject(carrier, propagator.extract({"baggage": received}))
    assert carrier["baggage"] == sent
