"""``tracekit.init()`` and ``tracekit.shutdown()``: wiring the SDK, logs and metrics."""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import random
import socket
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    ReadableSpan,
    Span,
    SpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import SpanKind

from tracekit import (
    config,
    correlation,
    propagation,
    semconv,
)
from tracekit._runtime import lifecycle, limits, state, unfinished
from tracekit._runtime.guard import error_message, report_once
from tracekit._utf8 import clean_text, clean_value

_log = logging.getLogger("tracekit")
# The SDK allows one global provider per process: tracekit creates it once and, across
# init/shutdown cycles, starts and stops only its own processors (behind _runtime's one).
_own_provider: TracerProvider | None = None


class CorrelationSpanProcessor(SpanProcessor):
    """Stamps the current correlation ID on every span this process starts, whoever starts it,
    or the one the caller's headers brought into the context it starts under (a contrib
    instrumentation's CONSUMER span started with ``context=propagate.extract(...)``)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attributes = span.attributes
        if attributes and semconv.CORRELATION_ID in attributes:
            return  # stamped as started (tracekit's own spans are): no ID to look up
        cid = correlation.span_correlation_id(parent_context, span.kind is SpanKind.SERVER)
        if cid is not None:
            span.set_attribute(semconv.CORRELATION_ID, cid)

    def on_end(self, span: ReadableSpan) -> None:
        pass


def build_resource(options: config.Options) -> Resource:
    """The service's resource: our options over ``OTEL_RESOURCE_ATTRIBUTES`` and SDK defaults."""
    # config resolved the name as the SDK would (OTEL_* variables, then unknown_service:python),
    # so spans, logs and metric labels all carry the same one
    attributes: dict[str, Any] = {"service.name": options.service_name}
    if options.service_version:
        attributes["service.version"] = options.service_version
    if options.environment:
        attributes["deployment.environment.name"] = options.environment
        attributes["deployment.environment"] = options.environment  # pre-1.27 name, still common
    resource = _utf8_resource(Resource.create(attributes))
    if "host.name" in resource.attributes:
        return resource
    # Spans of services on one host share a clock: path reconstruction never "fixes" skew there.
    return resource.merge(Resource({"host.name": socket.gethostname()}))


def _utf8_resource(resource: Resource) -> Resource:
    """``resource`` with its text UTF-8 can hold (``clean_text``): ``OTEL_RESOURCE_ATTRIBUTES``
    may hold a byte that is not UTF-8, which Python reads as a lone surrogate, and OTLP's
    encoder dropped that attribute from every batch, with a traceback on stderr each time."""
    cleaned = {clean_text(k): clean_value(v) for k, v in resource.attributes.items()}
    if cleaned == dict(resource.attributes):
        return resource
    return Resource(cleaned, resource.schema_url)  # type: ignore[arg-type]  # values kept


def build_exporter(options: config.Options) -> SpanExporter | None:
    """The span exporter that ``options.exporter`` names, or ``OTEL_TRACES_EXPORTER`` where it
    says ``none`` or ``console`` (None for ``none``)."""
    exporter_name = config.signal_exporter("TRACES", options.exporter)
    if exporter_name == "otlp":
        from tracekit._runtime.export_watch import WatchedSpanExporter

        return WatchedSpanExporter()
    if exporter_name == "store":
        from tracekit.store._paths import NoStorePathError
        from tracekit.store.exporter import StoreSpanExporter

        try:
            exporter: SpanExporter = StoreSpanExporter(options.store)
        except NoStorePathError as error:  # the service runs on, untraced rather than down
            _log.warning("tracekit: spans are not stored: %s", error)
            return None
        return exporter
    if exporter_name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    return None


def init(service_name: str | None = None, **options: Any) -> config.Options:
    """Configure tracing, log correlation, metrics and instrumentation; see ``tracekit.init``."""
    try:
        return _init(service_name, options)
    finally:
        if state.stop_put_off():  # shutdown() from a signal handler that interrupted init
            shutdown()


def _init(service_name: str | None, options: dict[str, Any]) -> config.Options:
    with state.initializing():
        running = state.current()
        if running is not None:
            _log.debug("tracekit.init() called again; keeping the first configuration")
            _warn_if_options_not_taken(running.options, service_name, options)
            running.instrument()  # put back if tracekit.uninstrument() removed it
            return running.options
        opts = config.resolve(service_name, **options)
        runtime = state.Runtime(opts)
        # Active first: instrumentation hooks may fire at once and read the options.
        state.activate(runtime)
        try:
            _start(runtime, opts)
        except BaseException:
            # Nothing half-started stays running: a later init (the value fixed) starts afresh.
            state.activate(None)
            runtime.stop()
            raise
        return opts


def _warn_if_options_not_taken(
    running: config.Options, service_name: str | None, options: dict[str, Any]
) -> None:
    """A second ``init`` keeps the first configuration: say so when it asked for another one
    (a framework plugin's ``init()`` came first, and the service's own options went unheeded).
    Only the options it names are compared: ``init()`` alone asks for nothing."""
    asked = {**options, **({"service_name": service_name} if service_name else {})}
    differing = [name for name, value in asked.items() if _not_in_force(running, name, value)]
    if differing:
        _log.warning(
            "tracekit: init() was called again while running, asking for other options (%s);"
            " they are not taken: the first init() stays in force until tracekit.shutdown()",
            ", ".join(sorted(differing)),
        )


def _not_in_force(running: config.Options, name: str, value: Any) -> bool:
    """Whether the option ``name`` asked for as ``value`` differs from the one in force; each is
    resolved alone, so that one value init would refuse does not make the others differ."""
    try:
        wanted = config.resolve(**{name: value})
    except (ValueError, TypeError):  # a value (or name) init would refuse: not taken either
        return True
    return bool(getattr(wanted, name) != getattr(running, name))


def _warn_if_sdk_disabled_unclear() -> None:
    """Only ``true`` (any case) turns the SDK off; OpenTelemetry reads any other value as false
    and asks for a warning: ``OTEL_SDK_DISABLED=1`` is meant to turn it off, and does not."""
    value = os.environ.get("OTEL_SDK_DISABLED", "").strip()
    if value.lower() not in ("", "true", "false"):
        _log.warning(
            "tracekit: OTEL_SDK_DISABLED=%r is neither true nor false; telemetry stays on"
            " (only true turns it off)",
            value[:40],
        )


def _start(runtime: state.Runtime, opts: config.Options) -> None:
    # Stamping first: the warnings init gives (tracekit's, the SDK's) are records too, and a
    # host format set before init that names tracekit's fields (uvicorn's --log-config) printed
    # "--- Logging error ---" with a traceback for each, in place of the warning.
    runtime.logs_started = True  # uninstalling undoes whatever part of it did start
    _start_optional("logs", dataclasses.replace(opts, export_logs=False), None)
    resource = build_resource(opts)
    _start_optional("logs", opts, resource)  # and the export, with the service's resource
    _warn_if_sdk_disabled_unclear()
    # OpenTelemetry's contrib instrumentations extract the caller's ID from the headers
    # tracekit's middleware accepts.
    _set_global_propagator(propagation.configured(opts.response_header, opts.correlation_headers))
    if not opts.correlation_only:
        runtime.span_processors = _tracing(opts, resource)
    runtime.metrics_server = _start_optional("metrics", opts, resource)
    runtime.instrument()
    lifecycle.install()


def _set_global_propagator(propagator: propagation.TracekitPropagator) -> None:
    """Make tracekit's propagator the one OpenTelemetry's own instrumentations use."""
    try:
        from opentelemetry import propagate
    except ValueError as error:
        # OTEL_PROPAGATORS names a propagator OpenTelemetry cannot load (not installed): its
        # module refuses to import. A configuration to fix, said in one line (no traceback);
        # tracekit's own middleware, clients and queues go on.
        _log.warning(
            "tracekit: OpenTelemetry refuses OTEL_PROPAGATORS (%s); its own instrumentations"
            " will not import until the name is fixed or its package installed",
            error_message(error),
        )
        return
    propagate.set_global_textmap(propagator)


def _tracing(opts: config.Options, resource: Resource) -> tuple[SpanProcessor, ...]:
    """tracekit's span processors, behind its one forwarding processor on the global provider."""
    global _own_provider
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        ids = _id_generator(propagation.configured(opts.response_header).names)
        # Without the SDK's exit hook, made here, after tracekit's (a first init in correlation
        # mode) and so run before it: tracekit's hook shuts the provider down right after its
        # flush (``state.flush_at_exit``), where the hooks registered since the first init have
        # run, as they run before tracekit's.
        _own_provider = current = TracerProvider(
            resource=resource,
            id_generator=ids,
            span_limits=limits.span_limits(),
            shutdown_on_exit=False,
        )
        state.shut_down_at_exit(current)
        trace.set_tracer_provider(current)
    state.attach_to(current)
    if current is not _own_provider:
        # The application configured the SDK itself: add correlation stamping, keep its export.
        _warn_if_host_names_another(current, opts.service_name)
        return (CorrelationSpanProcessor(), unfinished.OpenSpanProcessor())
    _warn_if_resource_kept(current.resource, resource)
    exporter = build_exporter(opts)
    if exporter is None:
        return (CorrelationSpanProcessor(), unfinished.OpenSpanProcessor())
    try:
        batch = BatchSpanProcessor(exporter)
    except ValueError as error:  # the SDK refuses an OTEL_BSP_* value, naming its parameter
        raise config.batch_setting_error(error, "OTEL_BSP") from None
    return (CorrelationSpanProcessor(), unfinished.OpenSpanProcessor(), batch)


class XRayIdGenerator(RandomIdGenerator):
    """Trace ids X-Ray accepts: the first 32 bits are the trace's start in epoch seconds (X-Ray
    refuses a trace id older than 30 days), the other 96 random, as in X-Ray's own ids and
    OpenTelemetry's AWS id generator. The random flag of W3C level 2 still holds: the last 7
    bytes are random."""

    def generate_trace_id(self) -> int:
        return (int(time.time()) << 96) | random.getrandbits(96)


def _id_generator(propagators: tuple[str, ...]) -> IdGenerator:
    """X-Ray's trace ids when the propagators (``OTEL_PROPAGATORS``) include ``xray``, else the
    SDK's random ones."""
    return XRayIdGenerator() if "xray" in propagators else RandomIdGenerator()


def _warn_if_resource_kept(kept: Resource, wanted: Resource) -> None:
    """A later ``init`` (after ``shutdown``) cannot rename its spans: OpenTelemetry sets the
    global tracer provider, and with it the spans' resource, once per process. Say so."""
    if kept.attributes == wanted.attributes:
        return
    _log.warning(
        "tracekit: spans keep the resource of the first init() in this process"
        " (service.name %r, not %r): OpenTelemetry sets its tracer provider once per process;"
        " logs and metrics use the new one",
        str(kept.attributes.get("service.name"))[:80],
        str(wanted.attributes.get("service.name"))[:80],
    )


def _warn_if_host_names_another(provider: TracerProvider, service_name: str) -> None:
    """The application's own tracer provider (``opentelemetry-instrument``'s) names its spans'
    service, and tracekit cannot rename them; its metrics use ``service_name``. Say so when the
    two differ: a dashboard's exemplar led to spans of a service of another name."""
    named = provider.resource.attributes.get("service.name")
    if named == service_name:
        return
    _log.warning(
        "tracekit: spans keep the service.name of the tracer provider the application set"
        " before init() (%r, not %r): tracekit's metrics say %r; give both one name",
        str(named)[:80],
        service_name[:80],
        service_name[:80],
    )


def _start_optional(part: str, opts: config.Options, resource: Resource | None) -> Any:
    """Logs and metrics must never stop tracing from starting (a value tracekit or the SDK
    refuses stops ``init`` whole, as for tracing); returns what ``install`` did."""
    try:
        return importlib.import_module(f"tracekit.{part}").install(opts, resource)
    except config.ConfigError:
        raise
    except Exception as error:
        report_once(f"tracekit {part} setup", error)
        return None


def shutdown() -> None:
    """Flush and stop everything ``init`` started; ``init`` may be called again afterwards."""
    state.stop_current()
    lifecycle.uninstall()
