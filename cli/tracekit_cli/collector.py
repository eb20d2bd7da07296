"""``tracekit collector``: an OTLP/HTTP receiver writing traces and logs into the embedded store."""

from __future__ import annotations

import signal
import sqlite3
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import click

from tracekit.receiver import DEFAULT_HOST, DEFAULT_PORT, Receiver, ReceiverConfig
from tracekit.store import Retention, Store, default_store_path, parse_duration, parse_size
from tracekit_cli.options import StoreOption

EXIT_ERROR = 2


def _retention(max_age: str | None, max_size: str | None) -> Retention | None:
    if max_age is None and max_size is None:
        return None
    try:
        return Retention(
            max_age_ns=parse_duration(max_age) if max_age else None,
            max_bytes=parse_size(max_size) if max_size else None,
        )
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on (OTLP/HTTP's standard port is 4318).",
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    cls=StoreOption,
)
@click.option(
    "--retention",
    "max_age",
    metavar="AGE",
    default=None,
    help="Delete records older than this, e.g. 7d, 12h (default: keep everything).",
)
@click.option(
    "--max-size",
    "max_size",
    metavar="SIZE",
    default=None,
    help="Keep the store file under this size, e.g. 2GB, 500MB (oldest go first).",
)
def collector(
    host: str, port: int, store_path: Path | None, max_age: str | None, max_size: str | None
) -> None:
    """Receive OTLP/HTTP traces and logs (protobuf or JSON) into the embedded store.

    Point any OpenTelemetry SDK or Collector at it (OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:PORT).
    /v1/metrics is acknowledged but not stored: metrics belong in Prometheus. Health: GET /health.
    Ctrl-C or SIGTERM stops it after writing everything it acknowledged.
    """  # fmt: skip
    retention = _retention(max_age, max_size)
    path = store_path if store_path is not None else default_store_path()
    store = Store(path)
    try:
        store.create()
    except (sqlite3.Error, OSError) as error:
        _fail(f"cannot open store {path}: {error}")
    try:
        receiver = Receiver(store, ReceiverConfig(host=host, port=port, retention=retention))
    except OSError as error:
        _fail(f"cannot listen on {host}:{port}: {error.strerror}")
    stop = threading.Event()
    previous = _on_stop_signals(stop)  # before the line: whoever reads it may signal at once
    try:
        receiver.start()
        click.echo(
            f"tracekit collector listening on {receiver.endpoint} (OTLP/HTTP), storing in {path}"
        )
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _fail(message: str) -> NoReturn:
    click.echo(f"tracekit collector: {' '.join(message.split())[:300]}", err=True)
    sys.exit(EXIT_ERROR)


def _on_stop_signals(stop: threading.Event) -> dict[int, Any]:
    """Make SIGTERM and SIGINT set ``stop``; returns the handlers they replaced.

    SIGINT is set explicitly too: a process started in the background inherits it ignored.
    """

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
