"""tracekit: correlation-first observability for Python microservices.

One call sets a service up::

    import tracekit
    tracekit.init("orders")

Every request the service serves and every HTTP call or message it sends then carries the
correlation ID and W3C trace context. Importing tracekit is cheap: the OpenTelemetry SDK setup, the
store and the receiver load only when used.
"""

import typing as _typing

from tracekit._version import __version__
from tracekit.correlation import correlation_id

if _typing.TYPE_CHECKING:
    # What type checkers see of the modules ``__getattr__`` loads on first use.
    from tracekit import asgi as asgi
    from tracekit import config as config
    from tracekit import django as django
    from tracekit import flask as flask
    from tracekit import logs as logs
    from tracekit import messaging as messaging
    from tracekit import metrics as metrics
    from tracekit import structlog as structlog
    from tracekit import wsgi as wsgi
    from tracekit.config import Options

__all__ = ["__version__", "correlation_id", "init", "shutdown", "uninstrument"]


def init(service_name: str | None = None, **options: _typing.Any) -> "Options":
    """Configure tracing, log correlation, metrics and every supported library that is installed.

    ``service_name`` defaults to ``TRACEKIT_SERVICE_NAME``, then ``OTEL_SERVICE_NAME``. Every
    keyword option also has a ``TRACEKIT_*`` environment variable (docs/configuration.md).
    Calling it again is harmless: the first configuration stays (options asked for again are
    not taken, and a warning names them). Returns the options in force.
    """
    from tracekit._runtime import setup

    return setup.init(service_name, **options)


def shutdown() -> None:
    """Flush pending telemetry and stop what ``init`` started."""
    from tracekit._runtime import setup

    setup.shutdown()


def uninstrument() -> None:
    """Remove tracekit's patches from HTTP clients and queue libraries (middleware stays).

    ``init()`` puts them back (the running configuration's), as does ``shutdown()`` then ``init()``.
    """
    from tracekit import instrumentation
    from tracekit._runtime import state

    runtime = state.current()
    if runtime is not None:
        runtime.uninstrument()  # so that the next init() instruments again
    instrumentation.uninstrument()


if not _typing.TYPE_CHECKING:  # to a type checker, an unknown name stays an error

    def __getattr__(name: str) -> object:
        """Public modules on first use: ``import tracekit`` then ``tracekit.wsgi`` works, and a
        plain ``import tracekit`` still loads none of them."""
        import importlib

        if not name.startswith("_"):
            try:
                return importlib.import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as error:
                if error.name != f"{__name__}.{name}":
                    raise  # the module exists; something it needs is missing
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        """The public names and the public modules loaded so far (listing loads nothing, so
        ``help(tracekit)`` works without every optional dependency)."""
        loaded = (n for n, v in globals().items() if isinstance(v, type(_typing)))
        return sorted({*__all__, *(n for n in loaded if not n.startswith("_"))})
