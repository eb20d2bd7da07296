"""What a scrape is served, and the upkeep of multiprocess mode's shared directory.

``exposition_registry`` serves a registry, or in prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``) every worker's files summed (``_WorkerFiles``); ``asgi_metrics_app``
and ``wsgi_metrics_app`` mount it in an application. ``mark_process_dead`` and
``fold_reused_files`` keep the directory from piling up files of exited workers
(``tracekit._metrics.fold``); ``recorded_now`` reads the series recorded there
(``tracekit._metrics.recorded``). Re-exported by ``tracekit.metrics``.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from tracekit._metrics.fold import fold_exited, fold_reused, process_exited, reading
from tracekit._metrics.local import local_values
from tracekit._metrics.recorded import RecordedSeries, recorded_series
from tracekit._runtime.guard import report_once

_log = logging.getLogger("tracekit")

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

# The variable's former name, which prometheus-client still honours (with a deprecation
# warning): its values go to the shared files under either name, so the scrape must read them.
_FORMER_MULTIPROC_DIR_ENV = "prometheus_multiproc_dir"


def multiprocess_enabled() -> bool:
    """True when prometheus-client's multiprocess mode is configured for this process."""
    return bool(multiprocess_directory())


def multiprocess_directory() -> str:
    """The shared directory of multiprocess mode, as prometheus-client reads it ('' if unset).

    prometheus-client copies the former name into ``PROMETHEUS_MULTIPROC_DIR`` only as a
    process creates its first value: read before (at ``init``, in gunicorn's master), the new
    name alone said single-process mode, and scrapes served one worker's values of the files.
    """
    return os.environ.get(MULTIPROC_DIR_ENV) or os.environ.get(_FORMER_MULTIPROC_DIR_ENV, "")


def exposition_registry(registry: CollectorRegistry | None = None) -> Collector:
    """What to serve: ``registry``, or in multiprocess mode every worker's files summed."""
    if registry is not None:
        return registry
    if not multiprocess_enabled():
        return REGISTRY
    if local_values():
        _warn_set_too_late()
    combined = CollectorRegistry()
    combined.register(_WorkerFiles())
    return combined


_set_too_late_warned = False


def _warn_set_too_late() -> None:
    """prometheus-client chooses where values live when it is imported: the variable set later
    (in gunicorn.conf.py after an import, in the app module) leaves them in each process, and
    the scrape, which reads the directory, shows none of them. Said once per process."""
    global _set_too_late_warned
    if _set_too_late_warned:
        return
    _set_too_late_warned = True
    _log.warning(
        "tracekit: %s was set after prometheus_client was imported in this process: its "
        "metrics stay in this process and scrapes of the shared directory miss them; set %s "
        "in the environment the server starts with",
        MULTIPROC_DIR_ENV,
        MULTIPROC_DIR_ENV,
    )


class _WorkerFiles(Collector):
    """Every worker's files summed, read afresh on every scrape.

    A ``PROMETHEUS_MULTIPROC_DIR`` that is not a directory (not created yet, a typo) gives an
    empty scrape and one warning, not an exception where the application mounts or serves the
    metrics: the application must start. A directory created later is read from then on.

    A file that cannot be read is left out (one warning each), not the whole scrape:
    prometheus-client creates a worker's file empty and sizes it after, and a worker killed in
    between (or a scrape at that moment) made every scrape of the server fail. Such a file stays
    left out until it changes, so later scrapes merge the others once, as usual.

    Each scrape first folds the files of exited workers into one per kind
    (``tracekit._metrics.fold``): a worker recycled by gunicorn's ``--max-requests`` leaves no
    file of its own for every later scrape to read.
    """

    def __init__(self) -> None:
        self._unreadable: set[_FileStamp] = set()  # files found unreadable, as they were then

    def collect(self) -> Iterable[Metric]:
        """The samples of every worker's readable files, summed."""
        directory = _existing_directory()
        if directory is None:
            return []
        with reading(directory, fold=True):  # exited workers' files folded first
            return self._merged(directory)

    def _merged(self, directory: str) -> Iterable[Metric]:
        from prometheus_client.multiprocess import MultiProcessCollector

        paths = [
            path  # (the directory's name escaped: "metrics[blue]" is no pattern)
            for path in glob.glob(os.path.join(glob.escape(directory), "*.db"))
            if not _of_dead_process(path)
        ]
        if self._unreadable:  # (a file removed or changed since is forgotten, or read again)
            stamps = {path: _stamp(path) for path in paths}
            self._unreadable &= set(stamps.values())
            paths = [path for path in paths if stamps[path] not in self._unreadable]
        merge = MultiProcessCollector.merge
        try:
            metrics: Iterable[Metric] = merge(paths)  # type: ignore[no-untyped-call]
            return metrics
        except Exception:  # noqa: S110 (a file that cannot be read: found one by one, below)
            pass
        readable = []
        for path in paths:
            # Stamped before it is read: a worker sizing its file as it is read makes it another
            # file at the next scrape, read again, not one stamped as it became, left out for good.
            stamp = _stamp(path)
            if _readable(path):
                readable.append(path)
            else:
                self._unreadable.add(stamp)
        metrics = merge(readable)  # type: ignore[no-untyped-call]
        return metrics


# path, inode, size, modification time (ns): a file replaced by another (a new inode) of the same
# size, written within the same tick of the file system's coarse clock, is another file.
_FileStamp = tuple[str, int, int, int]


def _stamp(path: str) -> _FileStamp:
    try:
        found = os.stat(path)
    except OSError:
        return (path, -1, -1, -1)
    return (path, found.st_ino, found.st_size, found.st_mtime_ns)


def _existing_directory() -> str | None:
    """The shared directory, or None (said once) where the variable names none that exists."""
    directory = multiprocess_directory()
    if os.path.isdir(directory):
        return directory
    error = NotADirectoryError(f"{MULTIPROC_DIR_ENV} is not set or not a directory")
    report_once(f"metrics exposition of {MULTIPROC_DIR_ENV}", error)
    return None


def recorded_now() -> RecordedSeries:
    """The histogram series in the multiprocess files (``tracekit._metrics.recorded``); none
    when they cannot be read."""
    directory = _existing_directory()
    if directory is None:
        return []
    try:
        return recorded_series(directory)
    except Exception as error:
        report_once("reading the metrics files' labels", error)
        return []


_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]*_(\d+)\.db")


def _of_dead_process(path: str) -> bool:
    """A live gauge's file whose process has gone (prometheus-client's ``mark_process_dead``
    removes those, but only where the server calls it: uvicorn ``--workers`` has no hook): its
    requests in flight stayed in ``http_server_active_requests`` for ever."""
    match = _LIVE_GAUGE_FILE.fullmatch(os.path.basename(path))
    return match is not None and process_exited(int(match[1]))


def _readable(path: str) -> bool:
    from prometheus_client.multiprocess import MultiProcessCollector

    try:
        MultiProcessCollector.merge([path])  # type: ignore[no-untyped-call]
    except Exception as error:
        report_once(f"reading metrics file {os.path.basename(path)!r}", error)
        return False
    return True


class MetricsASGIApp:
    """The metrics as an ASGI app object (not a function), so that Starlette's ``Route`` serves it
    at exactly ``/metrics``; a ``Mount`` would answer ``GET /metrics`` with a redirect."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve one scrape."""
        await self._app(scope, receive, send)


def asgi_metrics_app(registry: CollectorRegistry | None = None) -> MetricsASGIApp:
    """An ASGI app serving the metrics: ``Route("/metrics", asgi_metrics_app())``."""
    from prometheus_client import make_asgi_app

    return MetricsASGIApp(make_asgi_app(exposition_registry(registry)))


def wsgi_metrics_app(registry: CollectorRegistry | None = None) -> Callable[..., Any]:
    """A WSGI app serving the metrics (mount it at ``/metrics``)."""
    from prometheus_client import make_wsgi_app

    app: Callable[..., Any] = make_wsgi_app(exposition_registry(registry))
    return app


def mark_process_dead(pid: int) -> None:
    """Forget a dead worker's live gauges and fold its other files into those of the exited
    workers (multiprocess mode; call from gunicorn's child_exit)."""
    directory = multiprocess_directory()
    if directory:
        from prometheus_client import multiprocess

        try:
            # (named: prometheus-client looks only under the new name, unset here under the former)
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except OSError as error:  # (raised in child_exit, it stops gunicorn's master)
            _unmarked(error)
        if os.path.isdir(directory):
            fold_exited(directory)


def _unmarked(error: OSError) -> None:
    """prometheus-client lists a dead process's live gauge files, then removes them: one that
    a scrape's fold removed in between (the process is gone for it too) is no error; the fold
    removes the others."""
    if not isinstance(error, FileNotFoundError):
        report_once("removing a dead process's live gauges", error)


# The process whose reused files were folded (``fold_reused_files``): once per process.
_reused_folded_in = 0


def fold_reused_files(forked: bool = False) -> None:
    """Fold the files in the shared directory named with this process's ID that it has not
    opened: an exited process's of the same ID (``tracekit._metrics.fold.fold_reused``). Once,
    as the process starts to record: at its fork (``forked``), or as it calls ``init`` or makes
    its first metrics."""
    global _reused_folded_in
    directory = multiprocess_directory()
    if _reused_folded_in == os.getpid() or local_values() or not os.path.isdir(directory):
        return
    _reused_folded_in = os.getpid()
    fold_reused(directory, forked)
