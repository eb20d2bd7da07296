"""``tracekit.init()`` and ``tracekit.shutdown()``: wiring the SDK, logs and metrics."""

from __future__ import annotations

import importlib
import logging
import socket
import threading
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from tracekit import _state, config, correlation, instrumentation, propagation, semconv
from tracekit._guard import report_once

_log = logging.getLogger("tracekit")
_lock = threading.Lock()
# The SDK allows one global provider per process: tracekit creates it once and, across
# init/shutdown cycles, adds and shuts down only its own processors.
_own_provider: TracerProvider | None = None
_processors: list[SpanProcessor] = []


class CorrelationSpanProcessor(SpanProcessor):
    """Stamps the current correlation ID on every span this process starts, whoever starts it."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        cid = correlation.correlation_id()
        if cid is not None and not (span.attributes and semconv.CORRELATION_ID in span.attributes):
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
    resource = Resource.create(attributes)
    if "host.name" in resource.attributes:
        return resource
    # Spans of services on one host share a clock: path reconstruction never "fixes" skew there.
    return resource.merge(Resource({"host.name": socket.gethostname()}))


def build_exporter(options: config.Options) -> SpanExporter | None:
    """The span exporter that ``options.exporter`` names (None for ``none``)."""
    if options.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        from tracekit._export_watch import WatchedSpanExporter

        return WatchedSpanExporter(OTLPSpanExporter())
    if options.exporter == "store":
        from tracekit.store.exporter import StoreSpanExporter

        exporter: SpanExporter = StoreSpanExporter(options.store)
        return exporter
    if options.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    return None


def init(service_name: str | None = None, **options: Any) -> config.Options:
    """Configure tracing, log correlation, metrics and instrumentation; see ``tracekit.init``."""
    with _lock:
        if _state.options is not None:
            _log.debug("tracekit.init() called again; keeping the first configuration")
            return _state.options
        opts = config.resolve(service_name, **options)
        _state.options = opts
        propagate.set_global_textmap(propagation.TracekitPropagator(opts.response_header))
        resource = build_resource(opts)
        if not opts.correlation_only:
            _install_tracing(opts, resource)
        _install_optional("logs", opts, resource)
        _install_optional("metrics", opts, resource)
        instrumentation.instrument(
            instrumentation.selected(opts.instrument, opts.disabled_instrumentations)
        )
        return opts


def _install_tracing(opts: config.Options, resource: Resource) -> None:
    global _own_provider
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        _own_provider = current = TracerProvider(resource=resource)
        trace.set_tracer_provider(current)
    _add_processor(current, CorrelationSpanProcessor())
    if current is not _own_provider:
        # The application configured the SDK itself: add correlation stamping, keep its export.
        return
    exporter = build_exporter(opts)
    if exporter is not None:
        _add_processor(current, BatchSpanProcessor(exporter))


def _add_processor(provider: TracerProvider, processor: SpanProcessor) -> None:
    provider.add_span_processor(processor)
    _processors.append(processor)


def _install_optional(part: str, opts: config.Options, resource: Resource) -> None:
    """Logs and metrics must never stop tracing from starting."""
    try:
        module = importlib.import_module(f"tracekit.{part}")
        module.install(opts, resource)
    except Exception as error:
        report_once(f"tracekit {part} setup", error)


def shutdown() -> None:
    """Flush and stop everything ``init`` started; ``init`` may be called again afterwards."""
    with _lock:
        instrumentation.uninstrument()
        for part in ("logs", "metrics"):
            try:
                importlib.import_module(f"tracekit.{part}").uninstall()
            except Exception as error:
                report_once(f"tracekit {part} shutdown", error)
        for processor in _processors:
            processor.shutdown()
        _processors.clear()
        _state.options = None
