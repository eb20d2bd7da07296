"""What the middleware and clients read of ``tracekit.init()``'s state (held by ``_runtime``)."""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from tracekit import config
from tracekit._http.server import ServerRequests
from tracekit._runtime import state
from tracekit.metrics import HttpServerMetrics


def current_options(**overrides: Any) -> config.Options:
    """The options given to ``tracekit.init()`` (or read from the environment), with overrides."""
    runtime = state.current()
    base = runtime.options if runtime is not None else config.resolve()
    if not overrides:
        return base
    return config.resolve(**{**base.__dict__, **overrides})


def server_requests(
    tracer_provider: TracerProvider | None,
    registry: CollectorRegistry | None,
    overrides: dict[str, Any],
) -> ServerRequests:
    """Build the request handling shared by every server middleware flavour."""
    opts = current_options(**overrides)
    metrics = None
    if not opts.correlation_only:
        metrics = HttpServerMetrics.get(opts.service_name, opts.service_version, registry)
    return ServerRequests(opts, tracer_provider, metrics)
