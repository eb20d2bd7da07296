"""OTEL_PROPAGATORS: every format tracekit carries, both ways, against OpenTelemetry's reference
propagators (opentelemetry-propagator-b3, -jaeger, -aws-xray and the API's W3C one)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from reference_propagators import REFERENCES
from werkzeug.test import Client

from tracekit import correlation, messaging, propagation

TRACE_ID = 0x5759E988BD862E3FE1BE46A994272793
SPAN_ID = 0x53995C3F42CD8AD8


def remote_context(sampled: bool) -> Context:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else 0)
    span = trace.NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, True, flags))
    return trace.set_span_in_context(span)


def parent_of(context: Context) -> SpanContext:
    return trace.get_current_span(context).get_span_context()


@pytest.mark.parametrize("sampled", [True, False])
@pytest.mark.parametrize("name", list(REFERENCES))
def test_tracekit_reads_what_the_reference_writes(name: str, sampled: bool) -> None:
    headers: dict[str, str] = {}
    REFERENCES[name].inject(headers, remote_context(sampled))

    parent = parent_of(propagation.TracekitPropagator(propagators=[name]).extract(headers))

    assert (parent.trace_id, parent.span_id) == (TRACE_ID, SPAN_ID)
    assert parent.trace_flags.sampled is sampled
    assert parent.is_remote


@pytest.mark.parametrize("sampled", [True, False])
@pytest.mark.parametrize("name", list(REFERENCES))
def test_the_reference_reads_what_tracekit_writes(name: str, sampled: bool) -> None:
    headers: dict[str, str] = {}
    propagation.TracekitPropagator(propagators=[name]).inject(headers, remote_context(sampled))

    parent = parent_of(REFERENCES[name].extract(headers))

    assert (parent.trace_id, parent.span_id) == (TRACE_ID, SPAN_ID)
    assert parent.trace_flags.sampled is sampled
    assert set(headers) == REFERENCES[name].fields - {"tracestate"}  # no empty tracestate


@pytest.mark.parametrize(
    ("name", "headers"),
    [
        ("b3", {"b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"}),
        ("b3", {"b3": "a3ce929d0e0e4736-00f067aa0ba902b7"}),  # 64-bit trace id, deferred
        (
            "b3",
            {
                "x-b3-traceid": "a3ce929d0e0e4736",
                "x-b3-spanid": "00f067aa0ba902b7",
                "x-b3-sampled": "0",
            },
        ),
        (
            "b3multi",
            {
                "x-b3-traceid": "A3CE929D0E0E4736",
                "x-b3-spanid": "00F067AA0BA902B7",
                "x-b3-flags": "1",
            },
        ),
        ("jaeger", {"uber-trace-id": "3ce929d0e0e4736:f067aa0ba902b7:0:1"}),
        (
            "xray",
            {
                "X-Amzn-Trace-Id": "Self=1-67891233-12456789abcdef012345678;"
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
            },
        ),
    ],
)
def test_formats_as_other_implementations_send_them(name: str, headers: dict[str, str]) -> None:
    ours = parent_of(propagation.TracekitPropagator(propagators=[name]).extract(headers))
    reference = parent_of(REFERENCES[name].extract(headers))

    assert ours.is_valid and reference.is_valid
    assert (ours.trace_id, ours.span_id, ours.trace_flags) == (
        reference.trace_id,
        reference.span_id,
        reference.trace_flags,
    )


@pytest.mark.parametrize("name", ["b3", "b3multi"])
@pytest.mark.parametrize(
    "headers",
    [
        {"b3": "a3ce929d0e0e4736-00f067aa0ba902b7"},
        {"x-b3-traceid": "a3ce929d0e0e4736", "x-b3-spanid": "00f067aa0ba902b7"},
    ],
)
def test_b3_without_a_sampling_state_defers_the_decision_to_this_hop(
    name: str, headers: dict[str, str]
) -> None:
    """B3 without a sampling state leaves the decision to the receiver, in either encoding.
    OpenTelemetry's reference records a single header so but drops the same ids sent as
    multiple headers (it reads a missing X-B3-Sampled as "0"); tracekit records both, as its
    span is the receiver's decision (Envoy makes its own on both)."""
    parent = parent_of(propagation.TracekitPropagator(propagators=[name]).extract(headers))

    assert (parent.trace_id, parent.span_id) == (0xA3CE929D0E0E4736, 0x00F067AA0BA902B7)
    assert parent.trace_flags.sampled


HOSTILE = "\x1b]0;pwned\x07"


@pytest.mark.parametrize(
    ("name", "headers"),
    [
        ("b3", {"b3": f"{HOSTILE}-00f067aa0ba902b7-1"}),
        ("b3", {"b3": "0" * 32 + "-00f067aa0ba902b7-1"}),
        ("b3multi", {"x-b3-traceid": "a3ce929d0e0e4736" * 64, "x-b3-spanid": "00f067aa0ba902b7"}),
        ("jaeger", {"uber-trace-id": f"{HOSTILE}:1:0:1"}),
        ("jaeger", {"uber-trace-id": "1:2:3"}),
        ("xray", {"x-amzn-trace-id": f"Root={HOSTILE};Parent=53995c3f42cd8ad8"}),
        ("xray", {"x-amzn-trace-id": "Root=1-5759e988-bd862e3fe1be46a994272793"}),  # ALB: no parent
        ("xray", {"x-amzn-trace-id": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=1;oops"}),
        (
            "xray",
            {
                "x-amzn-trace-id": [
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
                ]
                * 2
            },
        ),  # repeated
        (
            "xray",
            {
                "x-amzn-trace-id": "Root=1-5759e988-bd862e3fe1be46a994272793;"
                "Parent=53995c3f42cd8ad8;Sampled=0,Root=1-6759e988-bd862e3fe1be46a994272794;"
                "Parent=63995c3f42cd8ad8;Sampled=1"
            },
        ),  # repeated, joined with "," as WSGI servers and Django join repeated headers
    ],
)
def test_bad_trace_headers_start_a_new_trace_silently(
    name: str, headers: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    context = propagation.TracekitPropagator(propagators=[name]).extract(
        headers, getter=propagation.HeaderGetter()
    )

    assert not parent_of(context).is_valid
    assert caplog.records == []


@pytest.mark.parametrize(
    ("name", "headers"), [("b3", {"b3": "0"}), ("b3multi", {"x-b3-sampled": "0"})]
)
def test_a_b3_denial_alone_starts_a_trace_that_is_not_sampled(
    name: str, headers: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A sampling decision without ids (B3's deny) names no caller's span, but says the caller
    wants no trace: the parent was none, so this hop sampled a new trace as its own."""
    caplog.set_level(logging.DEBUG)
    propagator = propagation.TracekitPropagator(propagators=[name])

    first, second = (parent_of(propagator.extract(headers)) for _ in range(2))

    assert first.is_valid and not first.trace_flags.sampled
    assert first.trace_id != second.trace_id  # a new trace each time, not a shared one
    assert caplog.records == []


def test_url_encoded_jaeger_header_is_read() -> None:
    """Some Jaeger clients send uber-trace-id percent-encoded (the reference does not read it)."""
    headers = {"uber-trace-id": f"{TRACE_ID:x}%3A{SPAN_ID:x}%3A0%3A1"}
    parent = parent_of(propagation.TracekitPropagator(propagators=["jaeger"]).extract(headers))
    assert (parent.trace_id, parent.span_id, parent.trace_flags.sampled) == (
        TRACE_ID,
        SPAN_ID,
        True,
    )


def test_combined_propagators_inject_all_and_the_last_found_wins() -> None:
    both = propagation.TracekitPropagator(propagators=["b3multi", "tracecontext", "xray"])
    headers: dict[str, str] = {}
    both.inject(headers, remote_context(True))
    assert {"x-b3-traceid", "traceparent", "X-Amzn-Trace-Id"} <= set(headers)

    b3_parent, w3c_parent = f"{TRACE_ID:032x}", f"{TRACE_ID + 1:032x}"
    incoming = {
        "x-b3-traceid": b3_parent,
        "x-b3-spanid": f"{SPAN_ID:016x}",
        "x-b3-sampled": "1",
        "traceparent": f"00-{w3c_parent}-{SPAN_ID:016x}-01",
    }
    assert parent_of(both.extract(incoming)).trace_id == TRACE_ID + 1  # tracecontext came later
    b3_last = propagation.TracekitPropagator(propagators=["tracecontext", "b3multi"])
    assert parent_of(b3_last.extract(incoming)).trace_id == TRACE_ID


def test_otel_propagators_names_and_the_default() -> None:
    assert propagation.propagator_names(None) == ("tracecontext", "baggage")
    assert propagation.propagator_names("") == ("tracecontext", "baggage")
    assert propagation.propagator_names(" B3 , xray,b3 ") == ("b3", "xray")
    assert propagation.propagator_names("none") == ()
    assert propagation.propagator_names("tracecontext,none,baggage") == ("tracecontext", "baggage")


def test_unknown_names_are_ignored_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tracekit"):
        assert propagation.propagator_names("b3,ottrace") == ("b3",)
    assert "OTEL_PROPAGATORS names 'ottrace', which tracekit does not carry" in caplog.text


def test_none_still_carries_the_correlation_id() -> None:
    headers: dict[str, str] = {}
    token = correlation.set_correlation_id("order-42")
    try:
        propagation.TracekitPropagator(propagators=[]).inject(headers, remote_context(True))
    finally:
        correlation.reset_correlation_id(token)
    assert headers == {"x-correlation-id": "order-42"}


def test_the_default_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
    headers: dict[str, str] = {}
    token = correlation.set_correlation_id("order-42")
    try:
        propagation.configured().inject(headers, remote_context(True))
    finally:
        correlation.reset_correlation_id(token)
    assert set(headers) == {"traceparent", "baggage", "x-correlation-id"}


@pytest.fixture
def provider() -> TracerProvider:
    provider = TracerProvider()
    provider.exporter = InMemorySpanExporter()  # type: ignore[attr-defined]
    provider.add_span_processor(SimpleSpanProcessor(provider.exporter))  # type: ignore[attr-defined]
    return provider


def test_xray_continues_the_trace_and_root_still_gives_the_correlation_id(
    monkeypatch: pytest.MonkeyPatch, provider: TracerProvider
) -> None:
    from tracekit.wsgi import TracekitMiddleware

    monkeypatch.setenv("OTEL_PROPAGATORS", "xray")
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen["correlation_id"] = correlation.correlation_id()
        start_response("200 OK", [])
        return [b"ok"]

    middleware = TracekitMiddleware(
        app, tracer_provider=provider, correlation_headers=["X-Amzn-Trace-Id"]
    )
    Client(middleware).get("/", headers={"X-Amzn-Trace-Id": header}, buffered=True)

    (server,) = provider.exporter.get_finished_spans()  # type: ignore[attr-defined]
    assert server.kind == SpanKind.SERVER
    assert server.context.trace_id == TRACE_ID
    assert server.parent is not None and server.parent.span_id == SPAN_ID
    assert seen["correlation_id"] == header  # as before: the header is the correlation ID


@pytest.mark.parametrize("name", ["b3", "b3multi", "jaeger", "xray"])
def test_queue_hops_carry_the_configured_headers(
    monkeypatch: pytest.MonkeyPatch, provider: TracerProvider, name: str
) -> None:
    monkeypatch.setenv("OTEL_PROPAGATORS", name)
    headers: dict[str, Any] = {}
    token = correlation.set_correlation_id("order-7")
    try:
        messaging.inject(headers, system="test", destination="q", tracer_provider=provider)
    finally:
        correlation.reset_correlation_id(token)
    assert "traceparent" not in headers and headers["x-correlation-id"] == "order-7"
    assert parent_of(REFERENCES[name].extract(headers)).is_valid  # the reference reads them

    with messaging.consume(headers, system="test", destination="q", tracer_provider=provider) as m:
        assert m.correlation_id == "order-7"

    producer, consumer = provider.exporter.get_finished_spans()  # type: ignore[attr-defined]
    assert consumer.parent is not None
    assert (consumer.context.trace_id, consumer.parent.span_id) == (
        producer.context.trace_id,
        producer.context.span_id,
    )


XRAY_PARENT = f"Root=1-5759e988-bd862e3fe1be46a994272793;Parent={SPAN_ID:016x};Sampled=1"


def test_a_queue_hop_forwards_the_callers_x_ray_lineage(
    monkeypatch: pytest.MonkeyPatch, provider: TracerProvider
) -> None:
    monkeypatch.setenv("OTEL_PROPAGATORS", "xray")
    received = {"X-Amzn-Trace-Id": f"{XRAY_PARENT};Lineage=a87bd80c:2"}
    with messaging.consume(received, system="test", destination="in", tracer_provider=provider):
        sent = messaging.inject({}, system="test", destination="out", tracer_provider=provider)

    assert sent["X-Amzn-Trace-Id"].startswith("Root=1-5759e988-bd862e3fe1be46a994272793;")
    assert sent["X-Amzn-Trace-Id"].endswith(";Sampled=1;Lineage=a87bd80c:2")
    # a message of another trace, published after, carries none of it
    other = messaging.inject({}, system="test", destination="out", tracer_provider=provider)
    assert "Lineage" not in other["X-Amzn-Trace-Id"]


@pytest.mark.parametrize(
    ("extra", "forwarded"),
    [
        ("Lineage=a87bd80c:2;Self=1-67891233-12456789abcdef012345678", "Lineage=a87bd80c:2"),
        ("Note=\x1b[2J\x07;Lineage=a87bd80c:2", "Lineage=a87bd80c:2"),
        ('Bad"Key=1;Sp=a b;Ok=x=y', "Ok=x=y"),
        (f"Big={'x' * 300};A=1", "A=1"),
        (
            ";".join(f"K{i}={'v' * 20}" for i in range(12)),
            ";".join(f"K{i}={'v' * 20}" for i in range(10)),
        ),
    ],
)
def test_only_plain_x_ray_fields_within_256_characters_are_forwarded(
    extra: str, forwarded: str
) -> None:
    xray = propagation.TracekitPropagator(propagators=["xray"])
    context = xray.extract({"X-Amzn-Trace-Id": f"{XRAY_PARENT};{extra}"})
    assert parent_of(context).span_id == SPAN_ID  # the trace continues whatever the extra fields

    headers: dict[str, str] = {}
    xray.inject(headers, context)
    assert headers["X-Amzn-Trace-Id"] == f"{XRAY_PARENT};{forwarded}"


def test_a_b3_parent_of_another_trace_takes_no_tracestate_from_the_w3c_one() -> None:
    both = propagation.TracekitPropagator(propagators=["tracecontext", "b3multi"])
    incoming = {
        "traceparent": f"00-{TRACE_ID + 1:032x}-{SPAN_ID:016x}-03",
        "tracestate": "congo=t61rcWkgMzE",
        "x-b3-traceid": f"{TRACE_ID:032x}",
        "x-b3-spanid": f"{SPAN_ID:016x}",
        "x-b3-sampled": "1",
    }
    context = both.extract(incoming)
    assert parent_of(context).trace_id == TRACE_ID

    headers: dict[str, str] = {}
    both.inject(headers, context)
    assert headers["traceparent"] == f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"
    assert "tracestate" not in headers


@pytest.mark.parametrize("name", ["b3", "b3multi"])
def test_a_debug_trace_is_forwarded_as_debug_and_the_reference_reads_it_sampled(
    name: str,
) -> None:
    b3 = propagation.TracekitPropagator(propagators=[name])
    context = b3.extract({"b3": f"{TRACE_ID:032x}-{SPAN_ID:016x}-d"})
    headers: dict[str, str] = {}
    b3.inject(headers, context)

    assert headers.get("b3", "-d").endswith("-d") and headers.get("x-b3-flags", "1") == "1"
    parent = parent_of(REFERENCES[name].extract(headers))
    assert (parent.trace_id, parent.trace_flags.sampled) == (TRACE_ID, True)

    other: dict[str, str] = {}  # a span of another trace, under the debug one's context
    span = trace.NonRecordingSpan(
        SpanContext(TRACE_ID + 1, SPAN_ID, True, TraceFlags(TraceFlags.SAMPLED))
    )
    b3.inject(other, trace.set_span_in_context(span, context))
    assert other.get("b3", "-1").endswith("-1") and "x-b3-flags" not in other


@pytest.mark.parametrize(
    "header",
    [
        f"{XRAY_PARENT};",  # a separator left after the last field
        f"{XRAY_PARENT}; ",
        f"Root=1-5759e988-bd862e3fe1be46a994272793;;Parent={SPAN_ID:016x}; Sampled=1",
    ],
)
def test_an_x_ray_header_with_an_empty_field_is_read(header: str) -> None:
    """An empty field between or after the ``;`` separators says nothing: the rest of the
    header is read (the whole header was refused and the trace restarted)."""
    xray = propagation.TracekitPropagator(propagators=["xray"])
    parent = parent_of(xray.extract({"X-Amzn-Trace-Id": header}))
    assert (parent.trace_id, parent.span_id, parent.trace_flags.sampled) == (
        0x5759E988BD862E3FE1BE46A994272793,
        SPAN_ID,
        True,
    )
