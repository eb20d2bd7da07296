"""The ``baggage`` header's shortcuts. Outgoing: tracekit writes short baggage itself and must write
exactly what OpenTelemetry's W3C propagator writes for the same context (escaping, order, limits,
warnings). Incoming: plain lists are split without the member-by-member reader, with its result."""

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

CASES: dict[str, dict[str, Any]] = {
    "plain": {"tenant": "acme", "region": "eu-west-1"},
    "needs escaping": {"tenant": "acme corp", "path": "/a,b;c=d", "pct": "100%", "é": "ü"},
    "not text": {"count": 3, "ratio": 0.5, "flag": True},
    "empty value": {"empty": ""},
    "unreserved marks": {"a_b.c~d-e": "A_b.C~d-E"},
    "many members": {f"k{i}": f"v{i}" for i in range(200)},
    "one long member": {"blob": "x" * 5000, "after": "kept?"},
    "long in all": {f"k{i}": "v" * 100 for i in range(100)},
    "correlation already there": {propagation.CORRELATION_BAGGAGE_KEY: "from-upstream"},
}


def _context(entries: dict[str, Any]) -> Context:
    context = Context()
    for key, value in entries.items():
        context = baggage.set_baggage(key, value, context)
    return context


def _reference(entries: dict[str, Any], cid: str | None) -> dict[str, str]:
    """What OpenTelemetry's writer puts in a carrier for ``entries`` with the correlation ID as
    their ``correlation.id`` (replacing one already there: the request's own ID wins)."""
    if cid is not None:
        entries = {**entries, propagation.CORRELATION_BAGGAGE_KEY: cid}
    carrier: dict[str, str] = {}
    W3CBaggagePropagator().inject(carrier, _context(entries))
    return carrier


def _written(entries: dict[str, Any], cid: str | None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    token = correlation.set_correlation_id(cid)
    try:
        propagation.TracekitPropagator().inject(carrier, _context(entries))
    finally:
        correlation.reset_correlation_id(token)
    return carrier


@pytest.mark.parametrize("cid", [None, "order-1", "kong-uuid#42", "Root=1-5759e988;a:b/c+d"])
@pytest.mark.parametrize("entries", CASES.values(), ids=CASES.keys())
def test_baggage_header_is_what_opentelemetry_writes(
    entries: dict[str, Any], cid: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    expected = _reference(entries, cid)
    reference_warnings = [r.getMessage() for r in caplog.records]
    caplog.clear()
    written = _written(entries, cid)
    assert written.get("baggage") == expected.get("baggage")
    assert [r.getMessage() for r in caplog.records] == reference_warnings
    assert written.get("x-correlation-id") == cid


def test_no_baggage_and_no_correlation_id_write_no_header() -> None:
    assert _written({}, None) == {}


def test_the_correlation_id_alone_is_one_member() -> None:
    assert _written({}, "order-7") == {
        "x-correlation-id": "order-7",
        "baggage": "correlation.id=order-7",
    }


_TOKEN = st.text(alphabet="!#$%&'*+-.^_`|~azAZ09", min_size=1, max_size=6)
_OCTETS = st.text(alphabet="!#$%&'()*+-./:<=>?@[]^_`{|}~az09\"\\;, \t\u00e9", max_size=6)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(_TOKEN, _OCTETS), max_size=70), st.sampled_from([",", ", ", ",,"]))
def test_reading_plain_lists_quickly_changes_nothing(
    members: list[tuple[str, str]], separator: str
) -> None:
    header = separator.join(f"{key}={value}" for key, value in members)
    assert _baggage.parse([header]) == _baggage.parse_member_by_member(header)
