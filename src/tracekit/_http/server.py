"""What the ASGI and WSGI middleware share: one SERVER span and one correlation ID per request.

The middleware modules only translate their protocol (scope/environ, send/start_response) into
calls on ``ServerRequests``; everything about IDs, context, span naming and attributes lives here.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from contextvars import Token
from dataclasses import dataclass
from time import perf_counter
from typing import Any
from weakref import ref

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import Link, SpanKind, TracerProvider
from prometheus_client import CollectorRegistry

from tracekit import correlation, propagation, semconv
from tracekit._propagation import baggage as _baggage
from tracekit._runtime import state, unfinished
from tracekit._runtime.guard import guarded, mark_failed, mark_failed_status, report_once
from tracekit.config import Options, compile_excluded
from tracekit.metrics import HttpServerMetrics

KNOWN_METHODS = semconv.HTTP_KNOWN_METHODS
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client went away first
USER_AGENT = "user-agent"
# The caller's own text: at most this much of it goes on the span (real ones are shorter).
MAX_USER_AGENT = 512
# ``url.path`` and ``url.full`` are cut here: a client (a server's path) or a server (a
# redirect's ``Location``) may send 60,000 characters, and the spans of a few such requests could
# make an export batch that a collector refuses whole (4 MiB on gRPC by default).
MAX_URL = 8192
# Flask's rules and Django's path() write a parameter as <name> or <converter:name>.
_ANGLE_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
# An HTTP method is a token (RFC 9110); one that is not, or is longer, is not kept as sent.
METHOD_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}")
# An address as servers write one: a host name, an IP address, a unix socket's path. Some take
# it from what the client sent (a Host header; X-Forwarded-For behind a proxy they trust):
# printable ASCII of at most 255 characters, or none.
_ADDRESS = re.compile(r"[!-~]{1,255}")
_log = logging.getLogger("tracekit")
_warned_outer_span = False
# The ActiveRequest of the request under way, in the context tracekit attaches for its span.
_REQUEST_KEY = otel_context.create_key("tracekit-request")
# ... and in the ASGI scope or WSGI environ, where the outermost tracekit layer leaves it for a
# layer inside (a mounted app's, Django's middleware) that finds another instrumentation's span
# current (OpenTelemetry's Django middleware opens one between them).
OUTER_REQUEST_KEY = "tracekit.request"


@dataclass(slots=True, weakref_slot=True)
class ActiveRequest:
    """State of one request between ``ServerRequests.start`` and ``finish``."""

    correlation_id: str
    method: str
    span: trace.Span | None
    context_token: object | None
    correlation_token: Token[str | None]
    started: float
    status_code: int = 0
    owns_span: bool = True
    measured: bool = True  # counted in the request metrics (a WebSocket connection is not)
    completed: bool = False  # span ended and metrics recorded
    completed_ns: int = 0
    responded_ns: int = 0  # a 5xx response went, its span waiting for the exception (responded)
    # Two tracekit layers on one request (the WSGI middleware around Django's): the inner one
    # points at the outer, which alone ends the span and records the metrics, with the route and
    # the error the inner one found if it knows none itself.
    outer: ActiveRequest | None = None
    route: str | None = None
    error: BaseException | None = None
    # The metrics the request was counted in flight in: it leaves them, whatever init renamed
    # while it was under way (the middleware reads the options again once init has run).
    metrics: HttpServerMetrics | None = None
    # The context current as the request started: what ``forget_answered_request`` puts back
    # where the request is abandoned without ever restoring it.
    arrived_in: otel_context.Context | None = None
    # An inner layer excludes the request (Django's ``TRACEKIT`` setting, which the outer layer
    # never read): no span is exported and no metrics are recorded for it.
    excluded: bool = False
    # The route the framework matched, read if SIGTERM or the exit ends the request before it
    # returns (its span then has the route it would have had).
    route_of: Callable[[], str | None] | None = None
    # ASGI: the server told the application that the client disconnected (``http.disconnect``).
    client_left: bool = False


class ServerRequests:
    """Starts and finishes the SERVER span and correlation context of incoming HTTP requests."""

    def __init__(
        self,
        options: Options,
        tracer_provider: TracerProvider | None = None,
        metrics: HttpServerMetrics | None = None,
    ) -> None:
        self.options = options
        self.correlation_headers = tuple(h.lower() for h in options.correlation_headers)
        self.response_header = options.response_header
        # The trace headers OTEL_PROPAGATORS names (W3C's by default) and the correlation headers.
        self._propagator = propagation.configured(options.response_header)
        self.wanted_headers = frozenset(
            (*self.correlation_headers, *self._trace_headers(options), *_described_by(options))
        )
        self._excluded = compile_excluded(options.excluded_urls)
        # Read on every request: plain attributes rather than a walk through options.
        self.excluded_search = self._excluded.search if self._excluded is not None else None
        self._public_endpoint = options.public_endpoint
        self._tracer = None
        self._tracer_provider = tracer_provider  # (None: the global one, looked up when needed)
        if not options.correlation_only:
            self._tracer = trace.get_tracer("tracekit", tracer_provider=tracer_provider)
        self._metrics = None if options.correlation_only else metrics
        # False in correlation-only mode: the middleware then skips span attributes and routes.
        self.records = self._tracer is not None or self._metrics is not None

    def _trace_headers(self, options: Options) -> list[str]:
        """The trace headers read besides the correlation ones: in correlation-only mode, which
        continues no trace, only ``baggage`` (for the ID's member), when it is propagated."""
        fields = [f.lower() for f in self._propagator.carried_fields]
        if not options.correlation_only:
            return fields
        return [propagation.BAGGAGE] if propagation.BAGGAGE in fields else []

    def is_excluded(self, path: str) -> bool:
        """True for paths (health checks, metrics) that get no span and no metrics."""
        return self._excluded is not None and self._excluded.search(path) is not None

    def start(
        self,
        method: str,
        path: str,
        headers: Mapping[str, list[str]],
        attributes: dict[str, Any],
        *,
        measured: bool = True,
        enclosing: object = None,
        traced: bool = True,
        route_of: Callable[[], str | None] | None = None,
    ) -> ActiveRequest:
        """Begin a request: pick the correlation ID, extract context, open the SERVER span.
        ``measured=False``: traced, but not an HTTP request for the metrics (a WebSocket).
        ``traced=False``: the correlation ID alone, no span and no metrics (a path the
        application's own setting excludes).
        ``enclosing``: what an outer layer left in the request itself (the ASGI scope), found
        even where the context it attached was replaced on the way in.
        ``route_of``: the route the framework matched so far (``ActiveRequest.route_of``)."""
        current = otel_context.get_current()
        # An empty current context (the usual case) holds no enclosing request or span.
        outer = current.get(_REQUEST_KEY) if current else None
        if isinstance(outer, ActiveRequest) and _encloses(outer, current):
            return _nested(outer, current, route_of)
        if isinstance(enclosing, ActiveRequest) and _serving(enclosing):
            return _nested(enclosing, current, route_of)
        cid = self.correlation_id_within(headers, enclosing)
        cid_token = correlation._set_checked(cid)  # chosen valid
        if method not in KNOWN_METHODS:  # PROPFIND, a typo: one _OTHER, the method kept beside
            if isinstance(method, str) and METHOD_TOKEN.fullmatch(method):
                attributes[semconv.HTTP_REQUEST_METHOD_ORIGINAL] = method
            method = semconv.OTHER_METHOD
        request = ActiveRequest(
            cid, method, None, None, cid_token, 0.0, measured=measured and traced
        )
        request.arrived_in = current
        request.route_of = route_of
        try:
            self._begin(request, current, path, headers, attributes, traced)
        except BaseException:
            # The caller serves the request without tracekit: nothing of it may stay current,
            # or the thread's next request (a WSGI server's) and its idle lines would show it.
            _restore(request)
            raise
        return request

    def _begin(
        self,
        request: ActiveRequest,
        current: otel_context.Context,
        path: str,
        headers: Mapping[str, list[str]],
        attributes: dict[str, Any],
        traced: bool,
    ) -> None:
        """Open the request's span (or stamp the one around it) and count it in flight."""
        cid = request.correlation_id
        if self._tracer is not None and traced:
            enclosing = self._stamped_enclosing_span(cid, headers) if current else None
            if enclosing is None:
                try:
                    self._start_span(request, path, headers, attributes)
                except Exception as error:  # a host sampler or processor that raises
                    report_once("request span", error)  # the request keeps its ID, no span
            else:
                request.span, request.owns_span = enclosing, False
                # the request, where a second tracekit layer inside this one finds it
                request.context_token = otel_context.attach(
                    otel_context.Context(
                        {**current, _REQUEST_KEY: request, correlation.CONTEXT_KEY: cid}
                    )
                )
        else:
            # No span to carry it: the ID alone rides in OpenTelemetry's context, for what
            # carries only that into a pool thread (OpenTelemetry's threading instrumentation);
            # the request too, for forget_answered_request to tell once it has answered.
            request.context_token = otel_context.attach(
                otel_context.Context(
                    {**current, _REQUEST_KEY: request, correlation.CONTEXT_KEY: cid}
                )
            )
        if self._metrics is not None and request.measured:
            request.metrics = self._metrics
            self._metrics.request_started()
        request.started = perf_counter()

    def complete(
        self, request: ActiveRequest, route: str | None, error: BaseException | None = None
    ) -> None:
        """End the request's span and record its metrics (once): when the response has gone,
        which may be before the application returns (work it does after answering)."""
        if request.completed:
            return
        request.completed, request.completed_ns = True, time.time_ns()
        if request.outer is not None:
            _report_to_outer(request.outer, route, error, request.status_code)
            return
        if request.excluded:
            _drop(request)
            return
        route, error = route or request.route, error or request.error
        try:
            if request.span is not None and request.owns_span:
                _end_span(request, route, error)
            elif request.span is not None and error is not None and request.span.is_recording():
                # Someone else's span, still open (FastAPI's own, which reports exceptions only
                # as logs; contrib's, which ends with the 500 page before the exception reaches
                # it): the exception that went out through tracekit belongs on it.
                mark_failed(request.span, error)
        finally:  # the span's failure must not cost the request its metrics
            if not request.responded_ns:
                self._record(request, route, error)

    def routed(self, request: ActiveRequest, route: str | None) -> None:
        """The route is known while the response is still under way (a streamed body): an outer
        tracekit layer, which may see the response end before this one does (Django's ASGI
        handler sends the last chunk, then closes the response), names the request with it."""
        if request.outer is not None and route:
            request.outer.route = request.outer.route or route

    def responded(self, request: ActiveRequest, route: str | None) -> None:
        """The response has gone: ``complete`` the request, except a 5xx's span, which waits
        for the exception that comes after its response (Starlette's ``ServerErrorMiddleware``
        sends its 500 page, then raises) and ends at this time; its metrics are recorded now,
        before any work the application does after answering, with the exception an inner
        tracekit layer reported already (Django's view's). (An inner tracekit layer's 5xx
        waits whole: it reports the exception to the outer layer.)"""
        if request.status_code < 500:
            self.complete(request, route)
        elif request.outer is None and not request.completed and not request.responded_ns:
            request.responded_ns = time.time_ns()
            self._record(request, route or request.route, request.error)

    def answering(self, request: ActiveRequest, error: BaseException) -> None:
        """A 5xx response starts as the application's own handler answers ``error`` (out of
        tracekit's sight): the request's exception, unless it has one. Someone else's span
        ends with the response (FastAPI's own, contrib's) and its owner names its error there
        (FastAPI: by the status): the exception is recorded on it now, and the metrics keep
        the status, as that span does. An outer tracekit layer sees the response start too."""
        if request.error is not None or request.outer is not None:
            return
        span = request.span
        if request.owns_span:
            request.error = error
        elif span is not None and span.is_recording():
            mark_failed(span, error)

    def _record(
        self, request: ActiveRequest, route: str | None, error: BaseException | None = None
    ) -> None:
        if request.metrics is not None and request.excluded:
            request.metrics.request_dropped()
        elif request.metrics is not None:
            request.metrics.request_finished(
                request.method,
                route,
                request.status_code,
                perf_counter() - request.started,
                request.span,
                error,
            )

    def finish(
        self, request: ActiveRequest, route: str | None, error: BaseException | None = None
    ) -> None:
        """``complete`` the request if it is not yet, and restore the caller's context."""
        if error is not None:
            correlation._remember_context(error)
        try:
            if request.completed and error is not None:
                self._failed_after_response(request, error)
            else:
                self.complete(request, route, error)
        finally:
            _restore(request)

    def set_aside(self, request: ActiveRequest, error: BaseException) -> None:
        """Restore the caller's context, leaving the request to ``complete`` once the answer
        to ``error``, made out of sight, is known (an app's own 500 handler's page)."""
        correlation._remember_context(error)
        _restore(request)

    def _failed_after_response(self, request: ActiveRequest, error: BaseException) -> None:
        """The application raised after its response had gone (a background task, its
        trailers, a FastAPI dependency's exit code): the request's span has ended (FastAPI's
        own too, which it ends with the response), so the exception gets a span of its own
        under it, from the response to now. An inner tracekit layer leaves it to the outer
        one, which the exception reaches next."""
        span = request.span
        if self._tracer is None or span is None or request.outer is not None or request.excluded:
            return
        name = getattr(span, "name", None) or "HTTP"
        after = self._tracer.start_span(
            f"{name} after response",
            trace.set_span_in_context(span),
            SpanKind.INTERNAL,
            start_time=request.completed_ns,
        )
        try:
            mark_failed(after, error)
        finally:
            after.end()

    def correlation_id_within(self, headers: Mapping[str, list[str]], enclosing: object) -> str:
        """The ID an outer tracekit layer without a span to share (correlation-only) gave the
        request already: what ran before this layer (Django's ``request_started`` receivers)
        and the response it echoes see that one. Else ``choose_correlation_id``."""
        if isinstance(enclosing, ActiveRequest) and not enclosing.completed:
            return enclosing.correlation_id
        return self.choose_correlation_id(headers)

    def choose_correlation_id(self, headers: Mapping[str, list[str]]) -> str:
        """The first valid ID among the accepted headers, else from baggage, else a new one."""
        for name in self.correlation_headers:
            values = headers.get(name)
            # A header repeated with several values is ambiguous: trust none of them.
            if values and len(values) == 1:
                # Whitespace around a value is no part of it; werkzeug's server leaves it on.
                value = values[0].strip(" \t")
                if correlation.is_valid(value):
                    return value
        if not self._public_endpoint:
            from_baggage = _baggage.correlation_id_of(headers.get(propagation.BAGGAGE))
            if from_baggage is not None:
                return from_baggage
        return correlation.new_correlation_id()

    def _stamped_enclosing_span(
        self, cid: str, headers: Mapping[str, list[str]]
    ) -> trace.Span | None:
        """The SERVER span someone else opened, stamped with the correlation ID; None when
        tracekit opens its own (none there, or public-endpoint mode, whose new root it must be)."""
        enclosing = _enclosing_server_span(lambda: self._callers_trace_id(headers))
        if enclosing is None:
            return None
        if self._public_endpoint:
            _warn_outer_span_continues_caller()
            return None
        enclosing.set_attribute(semconv.CORRELATION_ID, cid)
        return enclosing

    def _callers_trace_id(self, headers: Mapping[str, list[str]]) -> int | None:
        """The trace the request's trace headers continue, None where they name none (nor
        where they send a decision alone, ``b3: 0``: the ids made up for it differ each read)."""
        parent = self._propagator.extract_header_lists(headers, with_baggage=False, deciding=False)
        caller = propagation.linked_caller(parent)
        return caller.trace_id if caller is not None else None

    def _start_span(
        self,
        request: ActiveRequest,
        path: str,
        headers: Mapping[str, list[str]],
        attributes: dict[str, Any],
    ) -> None:
        assert self._tracer is not None
        # Public-endpoint mode drops incoming baggage: it is not even parsed.
        parent = self._propagator.extract_header_lists(
            headers, with_baggage=not self._public_endpoint, deciding=False
        )
        method = request.method
        attributes[semconv.HTTP_REQUEST_METHOD] = method
        attributes[semconv.URL_PATH] = path[:MAX_URL]
        agent = headers.get(USER_AGENT)
        if agent:
            attributes[semconv.USER_AGENT_ORIGINAL] = agent[0][:MAX_USER_AGENT]
        attributes[semconv.CORRELATION_ID] = request.correlation_id
        name = "HTTP" if method == semconv.OTHER_METHOD else method
        links = None
        if self._public_endpoint:
            remote = propagation.linked_caller(parent)
            links = [Link(remote)] if remote is not None else None
            parent = _without_caller(otel_context.get_current())
        else:
            # A decision the caller left to this hop is this provider's sampler's, for this span
            # (its rules may name the path), not one taken before the request was known.
            parent = propagation.decide_deferred(
                parent, self._tracer_provider, name, SpanKind.SERVER, attributes
            )
        span = request.span = self._tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            links=links,
        )
        # Recorded if SIGTERM's default action ends the process first.
        unfinished.track(span, None if request.route_of is None else _routed_now(request))
        # One new Context holding the span (what trace.set_span_in_context builds, minus a call)
        # and the request, which a second tracekit layer inside this one finds there.
        request.context_token = otel_context.attach(
            otel_context.Context(
                {
                    **parent,
                    propagation.CURRENT_SPAN_KEY: span,
                    _REQUEST_KEY: request,
                    correlation.CONTEXT_KEY: request.correlation_id,
                }
            )
        )


def _described_by(options: Options) -> tuple[str, ...]:
    """The request headers a SERVER span describes the caller by (none without spans)."""
    return () if options.correlation_only else (USER_AGENT,)


def server_requests(
    tracer_provider: TracerProvider | None,
    registry: CollectorRegistry | None,
    overrides: dict[str, Any],
) -> ServerRequests:
    """Build the request handling shared by every server middleware flavour."""
    opts = state.current_options(**overrides)
    metrics = None
    if not opts.correlation_only:
        try:
            metrics = HttpServerMetrics.get(opts.service_name, opts.service_version, registry)
        except Exception as error:
            # PROMETHEUS_MULTIPROC_DIR missing or read-only, a name the registry already has:
            # the application is served, traced, without these metrics.
            report_once("HTTP server metrics", error)
    return ServerRequests(opts, tracer_provider, metrics)


# The options a server middleware reads for its own app; the others configure the whole
# process (export, metrics port, logs, instrumentation), which only tracekit.init() sets up.
PER_APP_OPTIONS = frozenset({
    "service_name", "service_version", "mode", "correlation_headers", "response_header",
    "public_endpoint", "excluded_urls",
})  # fmt: skip


_said_ignored: set[tuple[type | None, tuple[str, ...]]] = set()


def check_overrides(overrides: dict[str, Any], middleware: type | None = None) -> None:
    """Refuse an invalid option now, as the application starts, and say which ones a
    middleware does not apply: given to it, ``exporter="console"`` would silently do nothing.
    Said once for each kind of ``middleware``: Django's test client builds the middleware of
    the ``TRACEKIT`` setting anew for each test."""
    ServerRequests(state.current_options(**overrides))
    ignored = tuple(sorted(set(overrides) - PER_APP_OPTIONS))
    if ignored and (middleware, ignored) not in _said_ignored:
        _said_ignored.add((middleware, ignored))
        _log.warning(
            "tracekit: the middleware ignores %s: they apply to the whole process; give them"
            " to tracekit.init()",
            ", ".join(ignored),
        )


_UNREAD = object()  # a middleware's runtime before its first request: none read yet


class OptionsReadLate:
    """Base of the ASGI, WSGI and Django middleware: options are read at the first request, and
    again at the first after each ``tracekit.init``. Frameworks build middleware
    before the code that calls init (Starlette before the lifespan startup where FastAPI apps
    call it, an app factory before its init call), and an application can outlive an init (a
    test suite's app whose lifespan inits per test): its requests follow the current one's
    service name and options. An invalid option fails at construction, as the application
    starts; no metric series exists until the first request."""

    _requests: ServerRequests
    untraced_search: Callable[[str], object] | None = None
    _read_under: object = _UNREAD  # the runtime whose options were read (None: before init)

    def __init__(
        self,
        tracer_provider: TracerProvider | None,
        registry: CollectorRegistry | None,
        options: dict[str, Any],
    ) -> None:
        self._setup = (tracer_provider, registry, options)
        check_overrides(options, type(self))

    def _read_options(self) -> None:
        """Read the options at the first request and at the first under each new
        ``tracekit.init`` (``state.current()``). After a ``shutdown`` (None) those read stay
        until the next init: a request still served then keeps its service's name, not the
        environment's."""
        runtime, read_under = state.current(), self._read_under
        if runtime is read_under or (runtime is None and read_under is not _UNREAD):
            return
        tracer_provider, registry, options = self._setup
        below = self._options_below()
        # Paths the application's own setting leaves out keep the ID this layer gives them (as
        # they did), untraced; this layer's own ``excluded_urls`` pass straight through.
        untraced = compile_excluded(below.pop("excluded_urls", ()))
        self.untraced_search = untraced.search if untraced is not None else None
        self._requests = server_requests(tracer_provider, registry, {**below, **options})
        if runtime is None and read_under is _UNREAD:
            _say_if_nothing_is_exported(tracer_provider, self._requests.options)
        self._configure(self._requests)
        # Last: a request on another thread that sees it set finds everything above set.
        self._read_under = runtime

    def _configure(self, requests: ServerRequests) -> None:
        """What the middleware derives from freshly read options."""

    def _options_below(self) -> dict[str, Any]:
        """Options the application below configures for itself (a Django project's
        ``TRACEKIT`` setting), under those this middleware is given."""
        return {}


_said_no_init: list[bool] = []


def _say_if_nothing_is_exported(tracer_provider: TracerProvider | None, options: Options) -> None:
    """Once in the process: a middleware serving before any ``tracekit.init()``, with no tracer
    provider of its own or set globally (``opentelemetry-instrument``'s), gives each request its
    correlation ID and exports nothing, which left a Django project with the ``MIDDLEWARE`` line
    and no ``init`` call looking for its requests in an empty store, with no word why."""
    if _said_no_init or options.correlation_only or tracer_provider is not None:
        return
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return
    _said_no_init.append(True)
    _log.warning(
        "tracekit: a request arrived before tracekit.init() ran in this process: it gets a"
        " correlation ID, but no span or log record is exported. Call tracekit.init() as the"
        " application starts (Django: in wsgi.py or asgi.py)."
    )


@guarded(None)
def forget_answered_request() -> None:
    """Start the current task's context afresh when it carries a request that has already
    answered: one this task inherited, not one it is part of (an enclosing tracekit layer has
    not answered yet when the layer inside it starts).

    Django under ASGI sends a response in its request's context, and uvicorn starts the
    connection's next pipelined request from inside that send: its task copies that context.
    The task ends with its request, so what is attached here is never detached. Django's test
    client leaves a streamed response it never read open in the test's thread: the request
    after it starts afresh too, and the abandoned one is not restored over it.
    """
    inherited = otel_context.get_value(_REQUEST_KEY)
    if isinstance(inherited, ActiveRequest) and inherited.status_code:
        # What was current before it (a test's own span around its client calls), not nothing.
        otel_context.attach(inherited.arrived_in or otel_context.Context())
        correlation._set_checked(_correlation_id_before(inherited))


def _correlation_id_before(request: ActiveRequest) -> str | None:
    """The correlation ID current before ``request`` set its own. Never set, not cleared (None),
    where there was none: a thread that lives on (a test's) must not go on hiding the ID a
    context carries into it, once the request after this one has ended."""
    before = request.correlation_token.old_value
    return correlation._NEVER_SET if before is Token.MISSING else before


def _serving(outer: ActiveRequest) -> bool:
    """True while ``outer``, a request an outer tracekit layer started for this very request
    (it left it in the ASGI scope), is under way with a span of its own to share."""
    return not outer.completed and outer.span is not None


def _encloses(outer: ActiveRequest, current: otel_context.Context) -> bool:
    """True when ``outer``, a request an outer tracekit layer started, is still the one under
    way here: its span is the current span, or the current span is a SERVER span opened right
    inside it (FastAPI's own, around a mounted app), not a span the application opened. A
    correlation-only layer's request has no span to share: the layer inside it traces alone."""
    if outer.completed or outer.span is None:
        return False
    span = current.get(propagation.CURRENT_SPAN_KEY)
    if span is outer.span:
        return True
    parent = getattr(span, "parent", None)
    return (
        getattr(span, "kind", None) is SpanKind.SERVER
        and parent is not None
        and outer.span is not None
        and parent.span_id == outer.span.get_span_context().span_id
    )


def _nested(
    outer: ActiveRequest,
    current: otel_context.Context,
    route_of: Callable[[], str | None] | None,
) -> ActiveRequest:
    """This layer's share of a request an outer tracekit layer handles: its correlation ID and
    span, no span or metrics of its own. A SERVER span opened between the layers is stamped
    with the correlation ID, as the outer layer stamps one it finds. ``route_of``: the route
    this layer's framework matches (Django's inside the WSGI middleware), which the outer
    layer's span takes if SIGTERM or the exit ends it."""
    if route_of is not None and outer.route_of is None and outer.owns_span:
        outer.route_of = route_of
        if outer.span is not None:
            unfinished.track(outer.span, _routed_now(outer))
    span = current.get(propagation.CURRENT_SPAN_KEY)
    if span is not outer.span and isinstance(span, trace.Span) and span.is_recording():
        span.set_attribute(semconv.CORRELATION_ID, outer.correlation_id)
    token = correlation._set_checked(outer.correlation_id)
    return ActiveRequest(
        outer.correlation_id, outer.method, outer.span, None, token, 0.0,
        owns_span=False, measured=False, outer=outer,
    )  # fmt: skip


def exclude_enclosing(enclosing: object) -> Token[otel_context.Context] | None:
    """An inner layer excludes the request an outer tracekit layer traces (Django's ``TRACEKIT``
    ``excluded_urls``, where tracekit's WSGI or ASGI middleware does not find Django's handler
    below it to read them): the outer layer exports no span and records no metrics for it, and
    it is no longer in flight. ``enclosing``: as for ``start``. The outer layer's span is no
    longer current (the token puts it back): spans the application makes from here start
    traces of their own, as for any excluded request, not children of a span never exported."""
    outer = otel_context.get_value(_REQUEST_KEY)
    if not (isinstance(outer, ActiveRequest) and _encloses(outer, otel_context.get_current())):
        outer = enclosing
    if not (isinstance(outer, ActiveRequest) and _serving(outer)):
        return None
    outer.excluded = True
    if outer.metrics is not None:
        outer.metrics.request_dropped()
        outer.metrics = None
    return otel_context.attach(trace.set_span_in_context(trace.INVALID_SPAN))


def _drop(request: ActiveRequest) -> None:
    """Leave an excluded request out: its span, started already, is never ended (so never
    exported), and it is no longer in flight."""
    if request.span is not None and request.owns_span:
        unfinished.claim(request.span)  # nor ended as SIGTERM ends the process
    if request.metrics is not None and not request.responded_ns:
        request.metrics.request_dropped()


def _report_to_outer(
    outer: ActiveRequest, route: str | None, error: BaseException | None, status_code: int
) -> None:
    """What only the inner layer knows (Django's resolver route, the view's exception, the
    client that left while Django's view ran, which no response tells), for the outer layer to
    name its span and label its metrics with, if it knows none itself."""
    outer.route = outer.route or route
    outer.error = outer.error or error
    if status_code == CLIENT_CLOSED_REQUEST and not outer.status_code:
        outer.status_code = status_code


def _enclosing_server_span(callers_trace_id: Callable[[], int | None]) -> trace.Span | None:
    """The SERVER span someone else already opened for this request, if any.

    FastAPI's native telemetry and OpenTelemetry's contrib ASGI/WSGI middleware open their SERVER
    span outside tracekit's middleware; tracekit then stamps that span instead of adding a second.
    Contrib's Django middleware under contrib's WSGI or ASGI middleware opens an INTERNAL one
    inside it: stamped too, where a span of tracekit's own began another trace.
    One the sampler left out is no longer recording and has no kind: a span of this process
    (not a caller's) that is not sampled is taken to be it, and the request stays left out; a
    span of tracekit's own would have been a new root, asked about again. Not one in another
    trace than the caller's (``callers_trace_id``): the request's own continues the caller's, so
    that one was current before the request came (a server started inside a span).
    """
    span = trace.get_current_span()
    if span.is_recording():
        kind = getattr(span, "kind", None)
        if kind is SpanKind.SERVER or (kind is SpanKind.INTERNAL and _contrib_servers(span)):
            return span
        return None
    span_context = span.get_span_context()
    if (
        span_context.is_valid
        and not span_context.is_remote
        and not span_context.trace_flags.sampled
        and callers_trace_id() in (None, span_context.trace_id)
    ):
        return span
    return None


def _contrib_servers(span: trace.Span) -> bool:
    """Whether ``span`` is the one an OpenTelemetry server instrumentation opened for the request
    inside another's: finding a span current, they open theirs as its INTERNAL child (contrib's
    Django middleware under contrib's WSGI or ASGI middleware)."""
    scope = getattr(span, "instrumentation_scope", None)
    return getattr(scope, "name", None) in _CONTRIB_SERVER_SCOPES


_CONTRIB_SERVER_SCOPES = frozenset(
    f"opentelemetry.instrumentation.{name}"
    for name in ("asgi", "wsgi", "django", "flask", "starlette", "fastapi", "falcon", "pyramid")
)


def _without_caller(context: otel_context.Context) -> otel_context.Context:
    """``context`` with no parent span and no baggage: the root of a public endpoint's trace.

    Other values stay (FastAPI keeps its request telemetry there); an outer SERVER span that
    continued the caller's trace is no longer the parent.
    """
    return baggage.clear(trace.set_span_in_context(trace.INVALID_SPAN, context))


def _warn_outer_span_continues_caller() -> None:
    global _warned_outer_span
    if _warned_outer_span:
        return
    _warned_outer_span = True
    _log.warning(
        "tracekit: public_endpoint: a SERVER span opened outside tracekit's middleware (FastAPI's "
        "own telemetry, or OpenTelemetry's ASGI/WSGI middleware) continues the caller's trace; "
        "tracekit starts the request's new root trace beside it. For a single root span turn "
        "the outer one off, e.g. FastAPI(telemetry={'tracing': False})."
    )


def _end_span(request: ActiveRequest, route: str | None, error: BaseException | None) -> None:
    span = request.span
    assert span is not None
    if not unfinished.claim(span):  # ended as SIGTERM ends the process
        return
    try:
        # One set_attribute per value: cheaper in the SDK than set_attributes with a mapping.
        if route:
            _name_by_route(span, request.method, route)
        if request.status_code:
            span.set_attribute(semconv.HTTP_RESPONSE_STATUS_CODE, request.status_code)
        if error is not None:
            mark_failed(span, error)
        elif request.status_code >= 500:
            mark_failed_status(span, request.status_code)
    finally:  # whatever failed above, the span is exported
        span.end(request.responded_ns or None)


def _name_by_route(span: trace.Span, method: str, route: str) -> None:
    span.update_name(f"{'HTTP' if method == semconv.OTHER_METHOD else method} {route}")
    span.set_attribute(semconv.HTTP_ROUTE, route)


def _routed_now(request: ActiveRequest) -> unfinished.Completing:
    """What completes the span of ``request`` that SIGTERM or the exit ends: the route matched
    by then (a Flask request is matched before its view runs). It holds the request weakly, as
    the span is kept: the request holds its span, and a response its caller dropped unclosed
    (the span never ended) kept both, and the environ, for the life of the process."""
    weak = ref(request)

    def name(span: trace.Span) -> None:
        request = weak()
        route = request.route_of() if request is not None and request.route_of else None
        if request is not None and route:
            _name_by_route(span, request.method, route)

    return name


def address_or_none(value: object) -> str | None:
    """``value`` when it reads as an address (``_ADDRESS``), else None."""
    return value if isinstance(value, str) and _ADDRESS.fullmatch(value) else None


def braced_route(rule: str) -> str:
    """``/orders/<int:order_id>`` -> ``/orders/{order_id}``: one route syntax for all frameworks."""
    return _ANGLE_PARAMETER.sub(r"{\1}", rule)


CurrentTokens = tuple[Token[str | None], Token[otel_context.Context]]


def make_current(cid: str, context: otel_context.Context) -> CurrentTokens:
    """Make ``cid`` (chosen valid) and ``context`` current where a request's work runs outside
    the context it started in; ``restore_current`` puts back what was there."""
    return correlation._set_checked(cid), otel_context.attach(context)


def restore_current(tokens: CurrentTokens) -> None:
    otel_context.detach(tokens[1])
    correlation._reset(tokens[0])


def _restore(request: ActiveRequest) -> None:
    """Put back the context the request started in, when it ends in that context. A streamed
    response may be closed in another (Django under ASGI closes it from a worker thread's
    context): nothing of the request is current there, so nothing is restored."""
    try:
        correlation._reset(request.correlation_token)
    except ValueError:
        return
    if request.context_token is not None:
        otel_context.detach(request.context_token)  # type: ignore[arg-type]
