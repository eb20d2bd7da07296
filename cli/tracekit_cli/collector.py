"""``tracekit collector``: an OTLP/HTTP receiver writing traces and logs into the embedded store."""

from __future__ import annotations

import errno
import ipaddress
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from tracekit.receiver import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HOST,
    DEFAULT_PORT,
    Receiver,
    ReceiverConfig,
    host_port,
)
from tracekit.store import (
    Retention,
    SchemaTooNewError,
    Store,
    parse_duration,
    parse_size,
)
from tracekit.store._heap import map_large_buffers
from tracekit_cli.options import (
    StoreOption,
    default_store,
    message_line,
    reason,
    refuse_folder,
    say,
    shown_path,
)
from tracekit_cli.output import Command

EXIT_ERROR = 2
REPEATED_SIGNAL_SECONDS = 0.2  # a person's second Ctrl-C comes later than this


def _retention(max_age: str | None, max_size: str | None) -> Retention | None:
    if max_age is None and max_size is None:
        return None
    return Retention(
        max_age_ns=_parsed(_age_with_unit, max_age, "--retention"),
        max_bytes=_parsed(parse_size, max_size, "--max-size"),
    )


def _age_with_unit(text: str) -> int:
    """An age for ``--retention``, which must name its unit, and minutes in lower case: a bare
    ``7`` is 7 seconds to the parser and ``1M`` a minute, and a user who meant 7 days or a month
    would lose everything older at the next pass."""
    age_ns = parse_duration(text)  # its own refusals first: they say what is wrong
    unit = text.strip()[-1:]
    if unit.isdigit():
        raise ValueError(f"give {text.strip()[:40]!r} a unit: 7d, 12h, 30m, 45s")
    if unit == "M":  # a minute to the parser, and may be a month to whoever typed it (7D: days)
        raise ValueError(f"write {text.strip()[:40]!r} in lower case: m is minutes, 30d a month")
    return age_ns


def _parsed(parse: Callable[[str], int], text: str | None, option: str) -> int | None:
    if text is None:
        return None
    if not text.strip():  # an unset variable (--retention "$AGE"): a limit was meant, not none
        raise click.BadParameter("empty; leave the option out to keep everything",
                                 param_hint=f"'{option}'")  # fmt: skip
    try:
        return parse(text)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=f"'{option}'") from None


def _address(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """An empty address (an unset variable in ``--host "$HOST"``) would listen on every
    interface: refused, so that exposing the receiver is always said out loud. An IPv6 address
    may come in the brackets of a URL (``[::1]``, as the listening line writes it), where the %
    before a link-local address's interface is written %25 (``[fe80::1%25eth0]``, RFC 6874)."""
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1].replace("%25", "%")
    if not value.strip():
        raise click.BadParameter("empty; to listen on every interface, say 0.0.0.0 or ::")
    if not _host_text(value):
        raise click.BadParameter(f"no address or host name can hold {value!r:.80}")
    instead = _address_alone(value)
    if instead:
        raise click.BadParameter(f"{value!r:.80} is more than an address: give {instead}")
    return value


def _address_alone(value: str) -> str | None:
    """What to type for a ``--host`` written as a URL or ``host:port`` (an endpoint copied from
    ``OTEL_EXPORTER_OTLP_ENDPOINT``), which was looked up as a host name: "cannot listen on
    [0.0.0.0:4318]:4318: Name or service not known". None for an address alone (``::1``). No
    host before the port (``:4318``) is every interface, as the OpenTelemetry Collector reads it:
    said out loud, as ``0.0.0.0``."""
    address = value.split("://", 1)[-1].split("/", 1)[0]
    host, colon, port = address.rpartition(":")
    if colon and port.isdigit() and not _is_ip(address):
        return f"--host {host or '0.0.0.0'} --port {port}"
    return f"--host {address}" if address != value else None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _host_text(value: str) -> bool:
    """Whether ``value`` can be a host at all: the socket encodes a name beyond ASCII as IDNA,
    which a control character, a bidi override or U+FFFD fails, and the bind then raised
    TypeError or UnicodeError (read as an internal error) instead of saying the name."""
    if not value.isprintable():
        return False
    try:
        value.encode("idna")
    except UnicodeError:
        return False
    return True


@click.command(cls=Command, short_help="Receive OTLP traces and logs into the embedded store.")
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    callback=_address,
    help="Address to listen on.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on (OTLP/HTTP's standard port is 4318).",
)
@click.option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_GRPC_PORT,
    show_default=True,
    help="Port for OTLP/gRPC (0 turns gRPC off).",
)
@click.option(
    "--store",
    "store_path",
    metavar="PATH",
    type=click.Path(path_type=Path),
    default=None,
    cls=StoreOption,
)
@click.option(
    "--retention",
    "max_age",
    metavar="AGE",
    default=None,
    help="Delete records older than this, e.g. 7d, 12h [default: keep everything].",
)
@click.option(
    "--max-size",
    "max_size",
    metavar="SIZE",
    default=None,
    help="Keep the store file under this size, e.g. 2GB, 500MB (oldest go first)"
    " [default: no limit].",
)
def collector(
    host: str,
    port: int,
    grpc_port: int,
    store_path: Path | None,
    max_age: str | None,
    max_size: str | None,
) -> None:
    """Receive OTLP traces and logs into the embedded store: HTTP (protobuf or JSON) and gRPC.

    Point any OpenTelemetry SDK or Collector at it (OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:PORT,
    or http://HOST:4317 with OTEL_EXPORTER_OTLP_PROTOCOL=grpc: without http:// an SDK's gRPC
    exporter would use TLS). Metrics are acknowledged and dropped: they belong in Prometheus.
    Health: GET /health, or gRPC's grpc.health.v1.Health/Check. Ctrl-C or SIGTERM stops it
    after writing everything it acknowledged.
    """  # fmt: skip
    retention = _retention(max_age, max_size)
    map_large_buffers()  # freed request bodies go back to the system (see tracekit.store._heap)
    # grpc's core would print its own lines (a failed bind, a client gone) raw on stderr; what
    # matters reaches the user as one line from us. Read when grpc is first imported.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    path = store_path if store_path is not None else default_store()
    refuse_folder(path)
    store = Store(path)
    try:
        store.create()
    except (sqlite3.Error, OSError, SchemaTooNewError) as error:
        _fail(f"cannot open store {shown_path(path)}: {reason(error)}")
    receiver = _receiver(
        store, ReceiverConfig(host=host, port=port, retention=retention), _asked_for(grpc_port)
    )
    stop = threading.Event()
    previous = _on_stop_signals(stop)  # before the line: whoever reads it may signal at once
    failure = None
    try:
        receiver.start()
        failure = _start_failure(receiver, stop)
        if failure is None and not stop.is_set():
            _announce(
                f"tracekit collector listening on {_where(receiver)}, storing in {shown_path(path)}"
            )
            while not stop.wait(0.5):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if failure is not None:  # a collector that can store nothing: its supervisor restarts it
        _fail(f"cannot store in {shown_path(path)}: the writer process did not start: {failure}")


def _start_failure(receiver: Receiver, stop: threading.Event) -> str | None:
    """Wait until the receiver can store (its line is said then, as /health says "ok": exports
    sent meanwhile are taken and wait for the writer process, which opens the store while the
    ports serve), or a stop is asked; why the writer process did not start, if it did not."""
    while not receiver.wait_ready(0.5) and not stop.is_set():
        if receiver.start_failure is not None:
            return receiver.start_failure
    return None


def _announce(line: str) -> None:
    """Print the listening line. It is news, not the collector's job: a stdout that cannot take
    it (a full disk, a pipe whose reader left) is pointed at /dev/null and the collector serves
    on, as a daemon whose log is gone does."""
    try:
        click.echo(line)
        sys.stdout.flush()
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


_GRPC_PORT_ADVICE = "--grpc-port PORT for another port, --grpc-port 0 for none"


def _asked_for(grpc_port: int) -> int | None:
    """``--grpc-port`` as typed, None where it was left to its default (which may be taken)."""
    source = click.get_current_context().get_parameter_source("grpc_port")
    return None if source is ParameterSource.DEFAULT else grpc_port


# the receiver's own text (a RuntimeError) tells a Python caller to pass grpc_port=None
_NO_GRPCIO = "OTLP/gRPC needs grpcio: pip install 'tracekit[cli]'"


def _receiver(store: Store, config: ReceiverConfig, grpc_port: int | None) -> Receiver:
    """The receiver; the default gRPC port, if taken, only costs gRPC (one line on stderr)."""
    wanted = DEFAULT_GRPC_PORT if grpc_port is None else grpc_port
    try:
        return Receiver(store, replace(config, grpc_port=wanted or None))
    except (OSError, RuntimeError) as error:
        if grpc_port is not None or getattr(error, "strerror", None):  # asked for, or HTTP's
            _fail(_listen_error(config, error))
        reason = _NO_GRPCIO if isinstance(error, RuntimeError) else message_line(str(error))
        say(
            f"tracekit collector: OTLP/gRPC not started: {reason}; serving"
            f" OTLP/HTTP only ({_GRPC_PORT_ADVICE})"
        )
    try:
        return Receiver(store, config)
    except OSError as error:
        _fail(_listen_error(config, error))


def _listen_error(config: ReceiverConfig, error: Exception) -> str:
    strerror = getattr(error, "strerror", None)
    if strerror:  # the HTTP socket: errno and its text
        where = f"cannot listen on {host_port(config.host, config.port)}: {strerror}"
        taken = getattr(error, "errno", None) == errno.EADDRINUSE
        # most often a collector started twice: say what to do, as the gRPC port's line does
        return f"{where} (another collector? --port PORT for another port)" if taken else where
    if isinstance(error, OSError):  # the gRPC socket: its text says where and why, not what to do
        return f"{error} ({_GRPC_PORT_ADVICE})"
    return f"{_NO_GRPCIO} (--grpc-port 0 for OTLP/HTTP only)"


def _where(receiver: Receiver) -> str:
    where = f"{receiver.endpoint} (OTLP/HTTP)"
    if receiver.grpc_address is not None:
        where += f" and {host_port(*receiver.grpc_address)} (OTLP/gRPC)"
    return where


def _fail(message: str) -> NoReturn:
    say(f"tracekit collector: {message_line(message)}")
    sys.exit(EXIT_ERROR)


def _on_stop_signals(stop: threading.Event) -> dict[int, Any]:
    """Make SIGTERM and SIGINT set ``stop``; returns the handlers they replaced.

    SIGINT is set explicitly too: a process started in the background inherits it ignored.
    A second signal while stopping exits at once: stopping waits for the requests in flight
    (a stalled client's up to its 30 s deadline), and whoever asks twice does not want to wait.
    One that follows the first within a fraction of a second is the same request, delivered
    twice (``timeout 60 tracekit collector`` signals the collector, then its process group).
    Nothing acknowledged is lost: an answer is sent only after its records are committed.
    """

    first: list[float] = []  # when the first signal came

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if first and time.monotonic() - first[0] < REPEATED_SIGNAL_SECONDS:
            return  # the same stop sent twice: timeout(1) signals us, then our process group
        if stop.is_set():
            click.echo(
                "tracekit collector: stopped without waiting for the requests in flight"
                " (none of them was acknowledged)",
                err=True,
            )
            os._exit(128 + signum)
        first.append(time.monotonic())
        stop.set()

    return {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
