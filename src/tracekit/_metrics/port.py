"""The metrics port: opened by ``install`` at ``tracekit.init()``, waited for while another
process holds it, freed for the workers of a reloader or supervisor, and a warning when a fork
leaves it serving only the parent. The HTTP server itself is ``tracekit._metrics.server``.
Re-exported by ``tracekit.metrics`` (``install``, ``MetricsServer``).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import threading
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

import wrapt
from prometheus_client.registry import Collector

from tracekit._metrics.exemplars import set_exemplar_filter
from tracekit._metrics.exposition import (
    MULTIPROC_DIR_ENV,
    exposition_registry,
    fold_reused_files,
    multiprocess_enabled,
)
from tracekit._runtime.guard import guarded
from tracekit.config import signal_exporter

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

    from tracekit.config import Options

_log = logging.getLogger("tracekit")


class MetricsServer(NamedTuple):
    """The exposition server ``install`` started (``tracekit._metrics.server``) and its thread."""

    httpd: Any
    thread: threading.Thread

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop serving (or waiting to serve: ``tracekit._metrics.server.Standby``) and release
        the port.

        In a process forked after ``install`` (gunicorn ``--preload``, multiprocessing's fork)
        the serving thread stayed in the parent: asking it to stop would wait for ever, so the
        child only closes its copy of the socket.
        """
        if self.thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=timeout_s)


def install(options: Options, resource: Resource | None = None) -> MetricsServer | None:
    """Serve metrics on ``options.metrics_port`` (0: don't) of ``options.metrics_host`` from a
    daemon thread.

    Returns the server (``tracekit.init()``'s runtime keeps it and closes it at shutdown), or
    None when nothing is served.
    """
    set_exemplar_filter(os.environ)
    fold_reused_files()
    if not _port_wanted(options):
        return None
    from tracekit._metrics.server import serve

    registry = exposition_registry()
    try:
        server = MetricsServer(*serve(options.metrics_port, registry, options.metrics_host))
    except OSError as error:
        return _stand_by(options, registry, error)
    _serving.clear()
    _serving.append((server, options.metrics_port))
    return server


def _port_wanted(options: Options) -> bool:
    """Whether to open the metrics port: not in correlation-only mode, not with port 0, and not
    when ``OTEL_METRICS_EXPORTER`` says ``none``, which an OpenTelemetry user sets to turn
    metrics export off (the Prometheus port is tracekit's only metrics exporter)."""
    exporter_off = signal_exporter("METRICS", "prometheus") == "none"
    return not (options.correlation_only or options.metrics_port == 0 or exporter_off)


def _stand_by(options: Options, registry: Collector, error: OSError) -> MetricsServer | None:
    """Wait for a port in use (``tracekit._metrics.server.Standby``): its holder may go, another
    worker, or the old worker of a gunicorn reload, which starts the new one first; then this
    process serves it. Any other refusal (a port below 1024, an address not of this host) would
    refuse it for ever: nothing waits."""
    from tracekit._metrics.server import Standby

    in_use = error.errno == errno.EADDRINUSE
    expected = in_use and multiprocess_enabled()  # another worker serves them all
    _log.log(
        logging.DEBUG if expected else logging.WARNING,
        "tracekit: metrics port %d unavailable (%s); not serving metrics from this process%s",
        options.metrics_port,
        error.strerror or type(error).__name__,
        _unserved_remedy(expected, in_use),
    )
    if not in_use:
        return None
    standby = Standby(options.metrics_port, registry, options.metrics_host)
    return MetricsServer(standby, standby.thread)


def _unserved_remedy(expected: bool, in_use: bool) -> str:
    """The end of the port-unavailable warning. A port in use outside multiprocess mode is held
    by another service on the same machine (a gateway and the app it calls, both on the default
    port), which wants a port of its own, or by a sibling worker of the same server (gunicorn
    ``-w 4``), whose scrapes then show its own counts only: a fraction of the traffic, which
    nothing else reveals."""
    if not in_use:
        return ""
    if expected:
        return " until it frees"
    return (
        " until it frees; if another service holds it, give this one TRACEKIT_METRICS_PORT=PORT"
        " (0 for none); if a worker of this server holds it, its scrapes miss this worker's "
        f"metrics: set {MULTIPROC_DIR_ENV} (docs/metrics.md)"
    )


# The server this process started, and its port: a process forked from here (gunicorn
# --preload, Celery prefork with init in the tasks module, multiprocessing) does its work with
# metrics nobody serves. The serving thread stays in the parent and answers with the parent's
# values; the children's counts never reach a scrape. Said once, in the parent, at the first fork.
_serving: list[tuple[MetricsServer, int]] = []
_forked_warned = False


def _before_fork() -> None:
    global _forked_warned
    if _forked_warned or not _serving or multiprocess_enabled():
        return
    server, port = _serving[0]
    if not server.thread.is_alive():  # closed since (tracekit.shutdown())
        return
    _forked_warned = True
    _log.warning(
        "tracekit: this process serves metrics on port %d and forked a child: the child's "
        "metrics are not served (scrapes get this process's values only); set %s for forked "
        "workers (gunicorn --preload, Celery prefork), or call tracekit.init() after the fork",
        port,
        MULTIPROC_DIR_ENV,
    )


# --- reloaders and supervisors -------------------------------------------------------------------
# ``uvicorn.run("main:app", reload=True)`` below an ``init()`` at the top of main.py, and
# ``fastapi dev`` (which imports the app's module to find the app), run ``init`` in the
# supervising process too. It serves no request, yet it held the metrics port: the worker it
# starts, the one that counts the requests, waited for the port for ever, and scrapes showed the
# supervisor's empty metrics. werkzeug's reloader (``flask run --debug``, ``app.run(debug=True)``)
# does the same: the reloading process loads the app, then starts the child that serves it; and
# Django's autoreloader (``manage.py runserver``) with an ``init()`` in settings.py or manage.py.
_SUPERVISORS = (
    ("uvicorn.supervisors.basereload", "BaseReload.run"),  # --reload
    ("uvicorn.supervisors.multiprocess", "Multiprocess.run"),  # --workers N
    ("werkzeug._reloader", "ReloaderLoop.restart_with_reloader"),  # flask run --debug
    ("django.utils.autoreload", "restart_with_reloader"),  # manage.py runserver
)


@guarded(None)
def _hook_supervisor(start_workers: str, module: ModuleType) -> None:
    wrapt.wrap_function_wrapper(module, start_workers, _run_without_metrics_port)


def _run_without_metrics_port(
    wrapped: Callable[..., Any], _: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Free the metrics port before the supervisor starts its workers, for one of them."""
    _release_port()
    return wrapped(*args, **kwargs)


@guarded(None)
def _release_port() -> None:
    from tracekit._runtime import state

    runtime = state.current()
    if runtime is None or runtime.metrics_server is None:
        return
    runtime.stop_serving_metrics()
    _log.debug("tracekit: metrics port freed for the workers of a reloader or supervisor")


for _module, _start_workers in _SUPERVISORS:
    wrapt.register_post_import_hook(functools.partial(_hook_supervisor, _start_workers), _module)


os.register_at_fork(before=_before_fork)
