"""tracekit: correlation-first observability for Python microservices.

One call sets a service up::

    import tracekit
    tracekit.init("orders")

Every request the service serves and every HTTP call or message it sends then carries the
correlation ID and W3C trace context. Importing tracekit is cheap: the OpenTelemetry SDK setup, the
store and the receiver load only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tracekit._version import __version__
from tracekit.correlation import correlation_id

if TYPE_CHECKING:
    from tracekit.config import Options

__all__ = ["__version__", "correlation_id", "init", "shutdown", "uninstrument"]


def init(service_name: str | None = None, **options: Any) -> Options:
    """Configure tracing, log correlation, metrics and every supported library that is installed.

    ``service_name`` defaults to ``TRACEKIT_SERVICE_NAME``, then ``OTEL_SERVICE_NAME``. Every
    keyword option also has a ``TRACEKIT_*`` environment variable (docs/configuration.md).
    Calling it again is harmless: the first configuration stays. Returns the options in force.
    """
    from tracekit import _setup

    return _setup.init(service_name, **options)


def shutdown() -> None:
    """Flush pending telemetry and stop what ``init`` started."""
    from tracekit import _setup

    _setup.shutdown()


def uninstrument() -> None:
    """Remove tracekit's patches from HTTP clients and queue libraries (middleware stays)."""
    from tracekit import instrumentation

    instrumentation.uninstrument()
