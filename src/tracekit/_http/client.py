"""What every HTTP client instrumentation shares: the CLIENT span and header injection."""

from __future__ import annotations

import codecs
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, TypeVar
from urllib.parse import SplitResult, urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from tracekit import correlation, propagation, semconv
from tracekit._http.server import KNOWN_METHODS, MAX_URL, METHOD_TOKEN
from tracekit._propagation import baggage as _baggage
from tracekit._runtime import unfinished
from tracekit._runtime.guard import (
    SentHeader,
    http_call_suppressed,
    mark_failed,
    mark_failed_status,
    report_once,
    suppress_nested_http_in,
    without_url_secrets,
)
from tracekit._runtime.state import current_options
from tracekit.metrics import HttpClientMetrics

R = TypeVar("R")

_tracer = trace.get_tracer("tracekit")
MAX_HOST = 255  # a DNS name's length at most: ``server.address`` of a longer one is cut


@dataclass(slots=True)
class ClientCall:
    """An outgoing request between ``start_call`` and ``end_call``; ``span`` is that of the
    request sent last (each resend, a redirect or a retry, has its own)."""

    span: trace.Span
    token: object
    attributes: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=perf_counter)
    parent: otel_context.Context | None = None  # of every span of the call: siblings
    sent: SentHeader | None = None  # the header naming the span sent last
    resends: int = 0
    seen: object = None  # what told the client's last resend (urllib3's ``Retry``)
    answer: int = 0  # the status of the request sent last, until it is sent again
    # False: ``span`` is another instrumentation's (contrib's aiohttp client, which traces the
    # call above tracekit): tracekit records the call's metrics and leaves the span alone.
    owned: bool = True


def start_call(method: str, url: str, headers: MutableMapping[str, Any]) -> ClientCall | None:
    """Open a CLIENT span for ``method url`` and inject context into ``headers``.

    Returns None when instrumentation is suppressed (an exporter's own request, or another
    layer already traces this call; headers are then left alone), and in correlation-only mode
    (headers get the correlation ID and incoming context, no span). A call whose span another
    instrumentation opened and wrote into ``headers`` (``_traced_outside``) is counted in the
    metrics, its span and headers left alone.
    """
    if http_call_suppressed(headers):
        keep_within_origin(url, headers)  # a redirect of a call of ours, maybe elsewhere
        return None
    options = current_options()
    if options.correlation_only:
        step = otel_context.get_value(_REDIRECT_STEP_KEY)
        if isinstance(step, RedirectStep):  # a redirect requests follows, or urllib3 below it
            step.send(url, headers)
        else:
            inject_only(headers)
        return None
    propagator = propagation.configured(options.response_header)
    if _traced_outside(headers, propagator):
        outside = trace.get_current_span()
        return ClientCall(outside, None, _attributes(method, _split(url)), owned=False)
    parts = _split(url)
    attributes = _attributes(method, parts)
    name = _span_name(attributes)
    present = _names_in(headers)
    callers_fields = _fields_set_by_caller(present, propagator)
    parent = _callers_parent(headers, callers_fields, propagator)
    span_attributes = _with_callers_id(attributes, headers, present, options.response_header)
    span = _tracer.start_span(name, parent, kind=SpanKind.CLIENT, attributes=span_attributes)
    unfinished.track(span)  # recorded if SIGTERM's default action ends the process first
    ctx = trace.set_span_in_context(span, parent)
    private = _private_headers(propagator, options.response_header)
    callers_own = _callers_values(headers, present, private)
    _write_context(headers, callers_fields, propagator, ctx)
    # Below our span, what carries the headers it sent (urllib3 under requests, a redirect, a
    # retry) is this call and stays quiet; so does contrib's instrumentation of it.
    sent = _sent(headers, (*propagator.trace_fields, options.response_header))
    call = ClientCall(span, None, attributes, parent=_resends_parent(parent, ctx), sent=sent)
    if sent is not None:  # what its redirects to another origin must not carry
        record = _Call(url, _prefix(parts), sent, private, callers_own, call)
        ctx = otel_context.set_value(_CALL_KEY, record, ctx)
    call.token = suppress_nested_http_in(ctx, sent)
    return call


# The outgoing call under way, for its redirects: where it went and what left only with it.
_CALL_KEY = otel_context.create_key("tracekit-client-call")


@dataclass(slots=True)  # made on every call: what only a redirect elsewhere needs waits for one
class _Call:
    url: str  # the URL the caller called
    prefix: str  # its ``scheme://authority``, as written: the cheap test of the origin
    sent: SentHeader  # the header telling this call's own requests (its redirects) apart
    private: tuple[str, ...]  # what tracekit wrote that stays within that origin (and ``sent``)
    callers_own: tuple[tuple[str, str], ...]  # the caller's own values of those, before
    client: ClientCall  # its span, and those of its resends
    taken_out: tuple[tuple[str, str], ...] = ()  # tracekit's, at the first hop away


def _resends_parent(
    parent: otel_context.Context | None, own: otel_context.Context
) -> otel_context.Context:
    """The parent of the spans of the call's resends: the first one's (they are siblings), or
    the first span itself (``own``'s) when that began a trace, which its resends stay in."""
    context = parent if parent is not None else otel_context.get_current()
    return context if trace.get_current_span(context).get_span_context().is_valid else own


def _private_headers(
    propagator: propagation.TracekitPropagator, correlation_header: str
) -> tuple[str, ...]:
    """The headers tracekit writes that carry the application's data or the request's identity
    (``baggage``, the correlation header), as opposed to the call's own span (trace headers)."""
    if propagator.carries_baggage:
        return (propagation.BAGGAGE, correlation_header)
    return (correlation_header,)


def _but(names: tuple[str, ...], kept: str) -> tuple[str, ...]:
    """``names`` without ``kept``: with no trace header configured, the correlation header is
    what tells the call's own redirects from other calls, so it has to go with them."""
    return tuple(name for name in names if name.lower() != kept.lower())


def _callers_values(
    headers: MutableMapping[str, Any], present: set[str], names: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    """The caller's own values for ``names`` (those in ``present``): what a redirect to
    another origin carries of them, as it would without tracekit. (Run on every call: most set
    none, and a loop finds that sooner than a generator.)"""
    own = [name for name in names if name.lower() in present]
    return tuple((name, ", ".join(_header_values(headers, name))) for name in own) if own else ()


def keep_within_origin(url: str, headers: MutableMapping[str, Any]) -> None:
    """When ``headers`` are a redirect of the call under way to another origin than the one the
    caller called, take out what tracekit wrote of ``baggage`` and the correlation header (the
    caller's own values go back): the server that redirected chose that origin, not the
    application, and HTTP clients drop ``Authorization`` there for the same reason. Trace
    headers stay: they name the call's own span and nothing else. An HTTPS upgrade of the same
    host keeps everything, as requests and httpx keep ``Authorization`` there; so does a hop
    back to the called origin, which gets again what a hop elsewhere went without."""
    try:
        call = otel_context.get_value(_CALL_KEY)
        if not isinstance(call, _Call):
            return
        if _same_start(url, call.prefix) or _within_called(call.url, url):
            if call.taken_out and _of_this_call(headers, call):
                _put_back(headers, call.taken_out)  # the hop before went elsewhere
            return  # (urllib3 below requests, on every call: no URL to split there)
        if _of_this_call(headers, call):  # not another call's, made from this one's hooks
            _take_out(headers, call)
    except Exception as error:
        report_once("http client redirect", error)


def _of_this_call(headers: MutableMapping[str, Any], call: _Call) -> bool:
    values = _header_values(headers, call.sent.name)
    return len(values) == 1 and call.sent.names_this_call(values[0])


def _take_out(headers: MutableMapping[str, Any], call: _Call) -> None:
    """Replace tracekit's values of ``call.private`` in ``headers`` by the caller's own, keeping
    tracekit's (of the first hop elsewhere, before any was taken out) for a hop back."""
    private = _but(call.private, call.sent.name)
    if not call.taken_out:
        call.taken_out = _callers_values(headers, _names_in(headers), private)
    _drop(headers, private)
    _put_back(headers, call.callers_own)


def _drop(headers: MutableMapping[str, Any], names: Iterable[str]) -> None:
    for name in names:
        if name in headers:
            del headers[name]  # every spelling and repeat: all these containers ignore case


def _put_back(headers: MutableMapping[str, Any], values: Iterable[tuple[str, str]]) -> None:
    for name, value in values:
        headers[name] = value


def _prefix(parts: SplitResult | None) -> str:
    return f"{parts.scheme}://{parts.netloc}" if parts is not None and parts.netloc else ""


def _same_start(url: str, prefix: str) -> bool:
    """Whether ``url`` is under ``prefix`` (``http://host:port``) as written."""
    return bool(prefix) and url.startswith(prefix) and url[len(prefix) : len(prefix) + 1] in "/?#"


def _origin(parts: SplitResult | None) -> tuple[str, str, int | None] | None:
    """Scheme, host and port (a default one filled in) of a URL's ``parts``."""
    if parts is None:
        return None
    scheme = parts.scheme.lower()
    port = _port(parts)
    return scheme, (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme)


def _within_called(called: str, hop: str) -> bool:
    """Whether ``hop`` is within the origin of the URL the caller ``called``, however written."""
    return _within(_origin(_split(called)), _origin(_split(hop)))


def _within(
    called: tuple[str, str, int | None] | None, hop: tuple[str, str, int | None] | None
) -> bool:
    if called is None or hop is None:
        return False  # a URL Python cannot split: taken for another origin
    if called == hop:
        return True
    return called == ("http", hop[1], 80) and hop == ("https", called[1], 443)


def _names_in(headers: MutableMapping[str, Any]) -> set[str]:
    """The header names the caller set, lower-case. One pass over the names: a missing key
    costs an exception in requests' header dict."""
    return {str(name).lower() for name in headers}


def _with_callers_id(
    attributes: dict[str, Any],
    headers: MutableMapping[str, Any],
    present: set[str],
    correlation_header: str,
) -> dict[str, Any]:
    """The span's attributes: with the correlation ID the caller put in its own header when no
    request's ID is current here (a script or job naming its calls), which is the ID the called
    service records, so that ``tracekit trace`` finds the call by it too. Inside a request the
    span keeps the request's ID, whatever the caller sends on. (``attributes`` themselves are
    the call's metric labels: a copy gets the ID.)"""
    if correlation_header.lower() not in present or correlation.correlation_id() is not None:
        return attributes
    callers_id = correlation.first_valid(_header_values(headers, correlation_header))
    return attributes if callers_id is None else {**attributes, semconv.CORRELATION_ID: callers_id}


def _fields_set_by_caller(
    present: set[str], propagator: propagation.TracekitPropagator
) -> list[str]:
    """The headers tracekit's propagator writes (trace headers, ``baggage``) that the caller
    already set (``present``, from ``_names_in``)."""
    return [name for name in propagator.carried_fields if name.lower() in present]


def _callers_parent(
    headers: MutableMapping[str, Any],
    callers_fields: list[str],
    propagator: propagation.TracekitPropagator,
) -> otel_context.Context | None:
    """The parent the caller's own trace headers name, when no trace is under way here (a
    job's traceparent passed on by hand): the call stays in that trace, as without tracekit.
    The current context with that parent in it: what its headers bring for the next hop of the
    trace (X-Ray's ``Lineage``, B3's debug flag) goes on in tracekit's. None: the current
    context is the parent, as for any span."""
    current = otel_context.get_current()
    if not callers_fields or trace.get_current_span(current).get_span_context().is_valid:
        return None
    found = {name.lower(): _header_values(headers, name) for name in callers_fields}
    context = propagator.extract_header_lists(found, current, with_baggage=False)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def _write_context(
    headers: MutableMapping[str, Any],
    callers_fields: list[str],
    propagator: propagation.TracekitPropagator,
    context: otel_context.Context,
) -> None:
    """Inject ``context`` into the caller's ``headers``, its own trace headers (those of
    ``callers_fields``) giving way to ours and its own baggage going on inside ours."""
    if callers_fields:
        context = _with_callers_baggage(headers, callers_fields, context)
        # With no span in ``context`` tracekit writes no trace headers: the caller's stay.
        if trace.get_current_span(context).get_span_context().is_valid:
            _drop_callers_trace_headers(headers, callers_fields)
    propagator.inject(headers, context)


def _drop_callers_trace_headers(headers: MutableMapping[str, Any], names: list[str]) -> None:
    """Remove the caller's own headers (``names``, present) of the trace formats tracekit is
    about to write.

    A format is written as a set: a caller's ``tracestate`` (or ``b3`` beside tracekit's
    ``x-b3-*``, or ``X-B3-Flags``) left next to tracekit's ``traceparent`` would describe
    another trace, and a reader taking it would join that trace or sample by its values.
    """
    for name in names:
        if name != propagation.BAGGAGE:  # which goes on, inside ours
            del headers[name]  # every spelling and every repeat: all these containers ignore case


def _traced_outside(
    headers: MutableMapping[str, Any], propagator: propagation.TracekitPropagator
) -> bool:
    """True when another instrumentation's CLIENT span for this call is current and already
    wrote itself into ``headers`` without OpenTelemetry's suppression flag (contrib's aiohttp
    client does so, its ``TraceConfig`` running before tracekit's): a span of tracekit's below
    it would trace the call twice and send the server another parent."""
    if getattr(trace.get_current_span(), "kind", None) is not SpanKind.CLIENT:
        return False
    own: dict[str, str] = {}
    propagator.inject(own)
    fields = [name for name in propagator.trace_fields if name in own]
    return bool(fields) and all(_header_values(headers, name) == [own[name]] for name in fields)


def _sent(headers: MutableMapping[str, Any], names: tuple[str, ...]) -> SentHeader | None:
    """A header this call sent that tells it from another: its trace header (whichever format
    ``OTEL_PROPAGATORS`` wrote), else its correlation header, which a new call has not yet."""
    for name in names:
        value = headers.get(name)
        if isinstance(value, str):
            return SentHeader(name, value)
    return None


def current_call() -> ClientCall | None:
    """The call under way here (None in correlation-only mode, which keeps no record)."""
    record = otel_context.get_value(_CALL_KEY)
    return record.client if isinstance(record, _Call) else None


def call_resending(headers: MutableMapping[str, Any]) -> ClientCall | None:
    """The call under way whose request ``headers`` are, sent again (a redirect, a retry):
    they carry the header it sent. None for a new call, and in correlation-only mode."""
    record = otel_context.get_value(_CALL_KEY)
    if isinstance(record, _Call) and _of_this_call(headers, record):
        return record.client
    return None


def resend(
    call: ClientCall,
    method: str,
    url: str,
    headers: MutableMapping[str, Any],
    answer: int | None,
    error: BaseException | None = None,
    *,
    end_before: bool = True,
) -> None:
    """``call``'s request goes again (a redirect followed, a retry) as ``method url`` with
    ``headers``: the span of the one before ends with its ``answer`` (or ``error``), and the new
    one gets a span of its own, a sibling with ``http.request.resend_count``, that its trace
    headers name, as OpenTelemetry's HTTP conventions ask. Without ``end_before`` the span
    before is left to the caller (``end_answered``): a client that tells of a resend before it
    decides to send it (aiohttp's redirect limit)."""
    if not call.owned:  # the other instrumentation's span covers the call's resends
        return
    try:
        if end_before:
            _end_span(call.span, answer, error)
        call.answer = 0  # until this one is answered
        call.resends += 1
        attributes = _attributes(method, _split(url))
        attributes[semconv.HTTP_REQUEST_RESEND_COUNT] = call.resends
        call.span = _tracer.start_span(
            _span_name(attributes), call.parent, kind=SpanKind.CLIENT, attributes=attributes
        )
        unfinished.track(call.span)
        _rewrite_trace_headers(call, headers)
    except Exception as exc:
        report_once("http client resend", exc)


def _rewrite_trace_headers(call: ClientCall, headers: MutableMapping[str, Any]) -> None:
    """Name ``call``'s current span in the trace headers of ``headers`` (nothing else: what
    the redirect step left of ``baggage`` and the correlation header stays as it is)."""
    propagator = propagation.configured(current_options().response_header)
    written: dict[str, str] = {}
    propagator.inject(written, trace.set_span_in_context(call.span, call.parent))
    for name in propagator.trace_fields:
        if name in written:
            headers[name] = written[name]
    sent = call.sent
    if sent is not None and sent.name in written and written[sent.name] != sent.value:
        sent.earlier += (sent.value,)
        sent.value = written[sent.name]


# What each client says of the HTTP version it spoke, as ``network.protocol.version`` has it:
# httpx's and urllib3's ``version_string``, urllib3's ``version`` (11), aiohttp's ``(1, 1)``.
_PROTOCOL_VERSIONS: dict[object, str] = {
    **{f"HTTP/{v}": v for v in ("0.9", "1.0", "1.1", "2", "3")},
    **{"HTTP/2.0": "2", "HTTP/3.0": "3", 9: "0.9", 10: "1.0", 11: "1.1", 20: "2", 30: "3"},
    **{(0, 9): "0.9", (1, 0): "1.0", (1, 1): "1.1", (2, 0): "2", (3, 0): "3"},
}


def note_protocol(call: ClientCall, version: object) -> None:
    """Set ``network.protocol.version`` on the span of the request answered in ``version``
    (one of the known versions; anything else, from a server or a stand-in, is left out)."""
    try:
        name = _PROTOCOL_VERSIONS.get(version)
        if name is not None and call.owned:
            call.span.set_attribute(semconv.NETWORK_PROTOCOL_VERSION, name)
    except Exception as error:  # an unhashable stand-in
        report_once("http client protocol version", error)


def _span_name(attributes: dict[str, Any]) -> str:
    name = attributes[semconv.HTTP_REQUEST_METHOD]
    return "HTTP" if name == semconv.OTHER_METHOD else str(name)


def end_call(call: ClientCall, status_code: int | None, error: BaseException | None = None) -> None:
    """Close the CLIENT span with the response status or the exception."""
    if call.owned:
        otel_context.detach(call.token)  # type: ignore[arg-type]
        _end_span(call.span, status_code, error)
    _record_metrics(call, status_code, error)


def end_answered(
    span: trace.Span,
    answer: int | None,
    error: BaseException | None = None,
    end_time: int | None = None,
) -> None:
    """End ``span``, of a request answered with ``answer`` (or failed with ``error``) that its
    client sends again, where ``resend`` does not: before the client pauses (urllib3's backoff,
    a ``Retry-After``: the pause is the client's, not the server's), or at ``end_time`` (ns),
    when the answer came, for a resend told of before it is sent (``end_before=False``)."""
    try:
        _end_span(span, answer, error, end_time)
    except Exception as exc:
        report_once("http client resend", exc)


def note_answer(call: ClientCall, status: int, version: object) -> None:
    """The request of ``call`` sent last was answered with ``status``, in HTTP ``version``:
    its span says the version, and the call keeps the status for the request sent after it."""
    call.answer = status
    note_protocol(call, version)


def _end_span(
    span: trace.Span,
    status_code: int | None,
    error: BaseException | None,
    end_time: int | None = None,
) -> None:
    # Ended as SIGTERM ends the process, or before the client paused to send it again.
    if not unfinished.claim(span) or not span.is_recording():
        return
    if status_code:
        span.set_attribute(semconv.HTTP_RESPONSE_STATUS_CODE, status_code)
    if error is not None:
        mark_failed(span, error, without_url_secrets)
    elif status_code and status_code >= 400:
        mark_failed_status(span, status_code)
    span.end(end_time)


def _record_metrics(call: ClientCall, status_code: int | None, error: BaseException | None) -> None:
    try:
        opts = current_options()
        metrics = HttpClientMetrics.get(opts.service_name, opts.service_version)
        seconds = perf_counter() - call.started
        metrics.request_finished(call.attributes, status_code, error, seconds, call.span)
    except Exception as exc:
        report_once("http client metrics", exc)


# Correlation-only mode keeps no record of a call (it would cost every call): each client's
# redirect step says which URL the call was sent to, and the rule of ``keep_within_origin`` is
# applied there. What tracekit writes in this mode is the context's, the same on every hop: a
# hop within the origin called gets it again by injecting, a hop elsewhere goes without.


def keep_within_called_origin(called: str, url: str, headers: MutableMapping[str, Any]) -> bool:
    """In correlation-only mode, for a redirect to ``url`` of a call first sent to ``called``:
    tracekit's ``baggage`` and correlation header where ``url`` is within the origin called,
    neither elsewhere. False (``headers`` left alone) in full mode, where ``keep_within_origin``
    does this from the call's record, and for a call tracekit does not touch."""
    try:
        if not current_options().correlation_only or http_call_suppressed(headers):
            return False
        _follow_origin_rule(called, url, headers)
    except Exception as error:
        report_once("http client redirect", error)
    return True


def _follow_origin_rule(called: str, url: str, headers: MutableMapping[str, Any]) -> None:
    if correlation.correlation_id() is None:
        return  # tracekit wrote nothing: what is there is the caller's own
    if _within_called(called, url):
        inject_only(headers)  # again, after a hop elsewhere went without
        return
    response_header = current_options().response_header
    _drop(headers, _private_headers(propagation.configured(response_header), response_header))


_REDIRECT_STEP_KEY = otel_context.create_key("tracekit-redirect-step")


@dataclass(slots=True)
class RedirectStep:
    """One redirect a client follows by sending again through its instrumented entry point
    (requests' ``Session.send`` and urllib3 below it), in correlation-only mode."""

    called: str  # the URL the call was first sent to
    hop_origin: tuple[str, str, int | None] | None = None  # where the hop goes: its first send

    def send(self, url: str, headers: MutableMapping[str, Any]) -> None:
        """Headers for a request sent while this redirect is followed: the hop itself and the
        layers below it (one origin) follow the rule; a call a response hook makes elsewhere is
        a call of its own."""
        origin = _origin(_split(url))
        if self.hop_origin is None:
            self.hop_origin = origin
        if origin != self.hop_origin:
            inject_only(headers)
        else:
            _follow_origin_rule(self.called, url, headers)

    def attach(self) -> object:
        """Make this step current; returns the token for ``otel_context.detach``."""
        return otel_context.attach(otel_context.set_value(_REDIRECT_STEP_KEY, self))


def inject_only(headers: MutableMapping[str, Any]) -> None:
    """Inject the current context without a span (correlation-only mode, suppressed calls)."""
    if correlation.correlation_id() is not None:
        propagator = propagation.configured(current_options().response_header)
        callers_fields = _fields_set_by_caller(_names_in(headers), propagator)
        _write_context(headers, callers_fields, propagator, otel_context.get_current())


def _with_callers_baggage(
    headers: MutableMapping[str, Any], callers_fields: list[str], context: otel_context.Context
) -> otel_context.Context:
    """``context`` with the members of the caller's own ``baggage`` header added, the
    caller's value winning for a key of both: tracekit's header replaces the caller's, and
    must still carry what the caller meant to send."""
    if propagation.BAGGAGE not in callers_fields:
        return context
    values = _header_values(headers, propagation.BAGGAGE)
    return _baggage.extract(values, context) if values else context


def _header_values(headers: MutableMapping[str, Any], name: str) -> list[str]:
    """Every ``name`` header the caller set, as text. aiohttp's multidict and urllib3's
    ``HTTPHeaderDict`` may hold several; the latter's ``get()`` joins them and raises on a
    bytes value, which requests and urllib3 both send as it is."""
    if hasattr(headers, "getall"):
        values = headers.getall(name, [])
    elif hasattr(headers, "getlist"):
        values = headers.getlist(name)
    else:
        values = [headers.get(name)]
    return [text for text in map(_as_text, values) if text]


def _as_text(value: object) -> str:
    """A header value as text: bytes as latin-1 (as HTTP reads them), anything else as none."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) else ""


# What a URL without a port means; WebSocket URLs too (aiohttp's ws_connect sends its ws:// or
# wss:// URL through the same client hooks), whose defaults are HTTP's (RFC 6455).
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _attributes(method: str, parts: SplitResult | None) -> dict[str, Any]:
    known = method.upper() in KNOWN_METHODS
    attributes: dict[str, Any] = {
        semconv.HTTP_REQUEST_METHOD: method.upper() if known else semconv.OTHER_METHOD
    }
    # What _OTHER stands for (PURGE, PROPFIND…), or what a known method was sent as (urllib3
    # sends "get" as given): OpenTelemetry asks for the original beside a canonical method.
    if method not in KNOWN_METHODS and METHOD_TOKEN.fullmatch(method):
        attributes[semconv.HTTP_REQUEST_METHOD_ORIGINAL] = method
    if parts is not None:
        _add_url_attributes(attributes, parts)
    return attributes


def _split(url: str) -> SplitResult | None:
    """``url``'s parts; None for one Python cannot split (``http://[::1/``, ``http://[zz]/``),
    which the client refuses in its own words: the span is still made, without them."""
    try:
        return urlsplit(url)
    except ValueError:
        return None


def _add_url_attributes(attributes: dict[str, Any], parts: SplitResult) -> None:
    host = parts.hostname or ""
    port = _port(parts)
    # Credentials as OpenTelemetry shows them (that some were given, not what); the query is
    # left out: it carries tokens too often.
    userinfo = "REDACTED:REDACTED@" if "@" in parts.netloc else ""
    attributes[semconv.URL_FULL] = _cut(
        f"{parts.scheme}://{userinfo}{f'[{host}]' if ':' in host else host}"
        + (f":{port}" if port and port > 0 else "")
        + parts.path
    )
    if host:
        attributes[semconv.SERVER_ADDRESS] = host[:MAX_HOST]
    if port != -1:
        port = port or DEFAULT_PORTS.get(parts.scheme)
        if port:
            attributes[semconv.SERVER_PORT] = port


# The %-escapes a cut URL ends with (a non-ASCII character is several: é is %C3%A9), and
# an escape the cut went through.
_ESCAPES_AT_END = re.compile(r"(?:%[0-9A-Fa-f]{2})+$")
_HALF_ESCAPE = re.compile(r"%[0-9A-Fa-f]?$")


def _cut(url: str) -> str:
    """``url`` cut at ``MAX_URL`` characters, after its last whole character: never inside an
    escape, nor between the escapes of one UTF-8 character (``…%C3``, which no reader decodes)."""
    if len(url) <= MAX_URL:
        return url
    cut = _HALF_ESCAPE.sub("", url[:MAX_URL])
    escapes = _ESCAPES_AT_END.search(cut)
    if escapes is None:
        return cut
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    decoder.decode(bytes.fromhex(escapes.group().replace("%", "")))  # a character unfinished
    unfinished = len(decoder.getstate()[0])  # stays in the decoder: its bytes are dropped
    return cut[: len(cut) - 3 * unfinished]


def _port(parts: SplitResult) -> int | None:
    """The URL's port; -1 for one that is no port (``:99999``, ``:abc``), which the client
    refuses or tries in its own way: the span is still made, without a port."""
    try:
        return parts.port
    except ValueError:
        return -1


def run_traced(
    method: str,
    url: str,
    headers: MutableMapping[str, Any],
    send: Callable[[], R],
    status_of: Callable[[R], int | None],
    protocol_of: Callable[[R], object] | None = None,
) -> R:
    """Run ``send()`` inside a CLIENT span; tracekit's own failures never reach the caller."""
    call = _safe_start(method, url, headers)
    if call is None:
        return send()
    try:
        result = send()
    except BaseException as error:
        _safe_end_failed(call, error)
        raise
    _safe_end_answered(call, result, status_of, protocol_of)
    return result


async def run_traced_async(
    method: str,
    url: str,
    headers: MutableMapping[str, Any],
    send: Callable[[], Awaitable[R]],
    status_of: Callable[[R], int | None],
    protocol_of: Callable[[R], object] | None = None,
) -> R:
    """The ``run_traced`` of async clients."""
    call = _safe_start(method, url, headers)
    if call is None:
        return await send()
    try:
        result = await send()
    except BaseException as error:
        _safe_end_failed(call, error)
        raise
    _safe_end_answered(call, result, status_of, protocol_of)
    return result


def _safe_start(method: str, url: str, headers: MutableMapping[str, Any]) -> ClientCall | None:
    try:
        return start_call(method, url, headers)
    except Exception as error:
        report_once("http client span start", error)
        return None


def _safe_end(
    call: ClientCall, status_code: int | None, error: BaseException | None = None
) -> None:
    try:
        end_call(call, status_code, error)
    except Exception as exc:
        report_once("http client span end", exc)


def _safe_end_answered(
    call: ClientCall,
    response: R,
    status_of: Callable[[R], int | None],
    protocol_of: Callable[[R], object] | None,
) -> None:
    """End ``call`` by the ``response`` the client returned: its status and HTTP version."""
    if protocol_of is not None:
        note_protocol(call, _safe_status(protocol_of, response))
    _safe_end(call, _safe_status(status_of, response))


def _safe_end_failed(call: ClientCall, error: BaseException) -> None:
    """End ``call`` by ``error``; by the response status when the error is only that status
    raised (``raise_for_status`` in a requests response hook or an httpx event hook): the server
    answered, and the span says so, as without the hook. An error after an answer (urllib3's
    retries used up on a 503) leaves that answer's status on the span beside it."""
    try:
        status = error.response.status_code  # type: ignore[attr-defined]
    except Exception:  # no response, or an exception that cannot even say
        status = None
    if type(status) is int and status >= 400:
        _safe_end(call, status)
    else:
        _safe_end(call, call.answer or None, error)


def _safe_status(status_of: Callable[[R], Any], result: R) -> Any:
    try:
        return status_of(result)
    except Exception:
        return None
