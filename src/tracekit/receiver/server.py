"""``Receiver``: the OTLP/HTTP receiver behind ``tracekit collector``, usable in-process too."""

from __future__ import annotations

import logging
import resource
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tracekit.receiver._address import host_port
from tracekit.receiver._admission import ConnectionTable, MemoryBudget
from tracekit.receiver._http import ReceiverHTTPServer
from tracekit.receiver._ingest import IngestQueue
from tracekit.receiver._service import IngestService
from tracekit.store import Retention, Store
from tracekit.store._process import importing_main_again

if TYPE_CHECKING:
    from tracekit.receiver._grpc import GrpcReceiver

__all__ = [
    "DEFAULT_GRPC_PORT",
    "DEFAULT_HOST",
    "DEFAULT_MAX_BODY",
    "DEFAULT_PORT",
    "Receiver",
    "ReceiverConfig",
    "connection_cap",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4318
DEFAULT_GRPC_PORT = 4317
DEFAULT_MAX_BODY = 16 * 1024 * 1024  # after decompression; larger requests get 413
# Seconds of a stop kept for writing what the requests drained had queued.
_WRITE_RESERVE = 5.0
# File descriptors kept free of client connections (SQLite, the writer's pipe, gRPC, logs).
_RESERVED_DESCRIPTORS = 64
# What a close may take past the deadline before a stop stops waiting for it: the writer process
# killed at the deadline is reaped, the store closed (milliseconds when nothing is stuck).
_CLOSE_MARGIN = 0.5
_log = logging.getLogger("tracekit.receiver")
_IMPORTED_AGAIN = (
    "tracekit: a Receiver is created as the main module is imported, which the writer process"
    " it starts imports again (multiprocessing's spawn): create and start it under"
    ' `if __name__ == "__main__":`'
)


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """How a receiver listens, how much it accepts and buffers, and what it keeps."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    grpc_port: int | None = None  # OTLP/gRPC as well (0: any free port); needs grpcio
    max_body_bytes: int = DEFAULT_MAX_BODY
    queue_capacity: int = 200_000  # records waiting for the writer before 503s start
    batch_size: int = 20_000  # records per transaction at most
    commit_timeout: float = 30.0  # a handler waits this long for its commit before a 503
    max_connections: int = 512  # HTTP connections at once, and gRPC ones (under the fd limit)
    # what requests may cost in memory at once, HTTP and gRPC (estimated: see _admission)
    max_memory_bytes: int = 160 * 1024 * 1024
    idle_timeout: float = 30.0  # seconds a keep-alive connection may wait for its next request
    request_timeout: float = 30.0  # seconds from a request's first byte to its last
    max_grpc_calls: int = 4096  # gRPC calls open at once; past it UNAVAILABLE (exporters retry)
    retention: Retention | None = None
    retention_interval: float = 60.0
    # a stop's whole length at most: Kubernetes' default grace is 30 s (docs/store.md: give 40)
    stop_timeout: float = 35.0
    # SQLite work in a child process: decoding and writing then use two cores (see docs/store.md)
    writer_process: bool = True


class Receiver:
    """An OTLP/HTTP receiver writing into ``store``.

    ``start()`` serves in a background thread at once (the ports are bound by then), while its
    writer process starts; ``ready`` (and ``/health``) tells once records can be committed.
    ``stop()`` stops accepting, lets in-flight requests finish, writes everything acknowledged,
    and closes the store.
    """

    def __init__(self, store: Store, config: ReceiverConfig | None = None) -> None:
        self.store = store
        self.config = config or ReceiverConfig()
        self.queue = IngestQueue(
            store,
            capacity=self.config.queue_capacity,
            batch_size=self.config.batch_size,
            retention=self.config.retention,
            retention_interval=self.config.retention_interval,
            writer_process=self.config.writer_process,
        )
        self.service = IngestService(self.queue, self.config.commit_timeout)
        self.budget = MemoryBudget(self.config.max_memory_bytes)
        try:
            self.httpd = ReceiverHTTPServer(
                (self.config.host, self.config.port),
                self.service,
                max_body=self.config.max_body_bytes,
                budget=self.budget,
                connections=ConnectionTable(
                    connection_cap(self.config.max_connections),
                    self.config.idle_timeout,
                    self.config.request_timeout,
                ),
            )
            self.grpc = self._grpc_side()
        except OSError:  # (its ports are the parent's: "Address already in use")
            self._refuse_main_imported_again()
            raise
        self._thread: threading.Thread | None = None

    def _grpc_side(self) -> GrpcReceiver | None:
        if self.config.grpc_port is None:
            return None
        try:
            from tracekit.receiver._grpc import GrpcReceiver
        except ImportError:
            self.httpd.server_close()
            self.httpd.connections.close()
            raise RuntimeError(
                "OTLP/gRPC needs grpcio: pip install 'tracekit[cli]' (or pass grpc_port=None)"
            ) from None
        try:
            return GrpcReceiver(
                self.config.host, self.config.grpc_port, self.service, self.budget,
                self.config.max_body_bytes, self.config.request_timeout,
                self.config.max_grpc_calls, self._grpc_connection_cap(),
            )  # fmt: skip
        except OSError:
            self.httpd.server_close()
            self.httpd.connections.close()
            raise

    def _grpc_connection_cap(self) -> int:
        """gRPC connections at once: as many as HTTP's, within the file descriptors the HTTP
        connections and the reserve leave (at least 64 when they leave fewer: exporters keep one
        connection each, and at such a limit the HTTP side sheds rather than spins)."""
        wanted = self.config.max_connections
        left = connection_cap(wanted + self.httpd.connections.cap) - self.httpd.connections.cap
        return max(min(wanted, 64), min(wanted, left))

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the real port when 0 was asked for)."""
        host, port = self.httpd.server_address[:2]
        if "%" in self.config.host:  # the system names it without its interface (fe80::1%eth0),
            host = self.config.host  # and a link-local address cannot be reached without one
        return str(host), int(port)

    @property
    def grpc_address(self) -> tuple[str, int] | None:
        """The gRPC host and bound port, or None when gRPC is off."""
        return None if self.grpc is None else (self.config.host, self.grpc.port)

    @property
    def endpoint(self) -> str:
        """Base URL for OTLP exporters (``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
        # a URL writes the % before an interface as %25 (RFC 6874), as curl reads it
        return "http://" + host_port(*self.address).replace("%", "%25")

    @property
    def ready(self) -> bool:
        """Whether records sent now can be committed (the writer process has opened the store);
        ``/health`` answers 503 ``starting`` until then."""
        return self.queue.ready

    @property
    def start_failure(self) -> str | None:
        """Why the writer process did not start (it ended, or did not open the store within
        60 s), or None; ``ready`` stays False then (the first export starts another one)."""
        return self.queue.start_failure

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s for ``ready``; returns it. False as soon as the writer
        process's start failed: ``start_failure`` says why."""
        return self.queue.wait_ready(timeout)

    def start(self) -> Receiver:
        """Create the store if needed, start the writer, and serve in a background thread
        (without waiting for the writer: see ``ready``)."""
        self._refuse_main_imported_again()
        self.store.create()
        # Open the interner's connection now, not on the first request: opened under another
        # process's write lock, its write check waited out eight busy timeouts (42 s), and the
        # interner tried twice, so that request held the decode lock (every other request) and
        # a stop for 85 s. Open, one request's interning waits two busy timeouts for its 503.
        self.store.encoder.interner.refresh()
        self.queue.start()
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="tracekit-http"
        )
        self._thread.start()
        if self.grpc is not None:
            self.grpc.start()
        return self

    def stop(self) -> None:
        """Graceful shutdown within ``stop_timeout`` s: nothing acknowledged is lost.

        gRPC and HTTP stop accepting at once and drain side by side, each for at most the same
        grace: one after the other, HTTP went on accepting while gRPC drained, and the worst
        stop was twice as long. What is left of ``stop_timeout`` (``_WRITE_RESERVE`` s at
        least) writes what the requests queued; a writer process that has not committed by then
        is killed: those records were never acknowledged, and their exporters send them again.
        Before, a writer process held (stopped, hung) at the stop was waited for up to 60 s
        more, past any platform's grace period."""
        deadline = time.monotonic() + self.config.stop_timeout
        self.service.stopping = True
        grace = max(0.0, min(self.config.commit_timeout + 5, _left(deadline) - _WRITE_RESERVE))
        with ThreadPoolExecutor(1, thread_name_prefix="tracekit-grpc-stop") as beside:
            grpc_side = beside.submit(self.grpc.stop, grace) if self.grpc is not None else None
            self._stop_http(grace)
            if grpc_side is not None:
                grpc_side.result()
        _finish_by(deadline, lambda: self._close(deadline))

    def _close(self, deadline: float) -> None:
        """Write what the requests queued, then close the gRPC workers and the store."""
        self.queue.close(_left(deadline))
        if self.grpc is not None:
            self.grpc.close()
        self.store.close()

    def _stop_http(self, grace: float) -> None:
        """Stop accepting HTTP connections and wait up to ``grace`` s for the requests begun."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()
        self.httpd.close_connections(wait=grace)

    def _refuse_main_imported_again(self) -> None:
        """Where a script starts its receiver without an ``if __name__ == "__main__":`` guard,
        the writer process runs that script again as it starts, and fails there: say so in one
        line rather than with multiprocessing's 60-line traceback (or, its ports being the
        parent's, with "Address already in use"). That process can be neither the script nor
        the writer."""
        if self.config.writer_process and importing_main_again():
            raise SystemExit(_IMPORTED_AGAIN)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _finish_by(deadline: float, close: Callable[[], None]) -> None:
    """Run ``close`` and wait for it until ``deadline``; past it, it goes on in the background.

    Whatever waits on SQLite may outlast a stop's deadline: a write of the in-process writer
    (``writer_process=False``) or a request's interning under another process's write lock
    waits out SQLite's busy timeouts, and a thread cannot be cut short. Nothing acknowledged
    is lost by not waiting: a request is answered only after its commit.
    """
    failure: list[BaseException] = []

    def run() -> None:
        try:
            close()
        except BaseException as error:  # told to the caller of stop() while it still waits
            failure.append(error)

    closing = threading.Thread(target=run, name="tracekit-receiver-close", daemon=True)
    closing.start()
    closing.join(_left(deadline) + _CLOSE_MARGIN)
    if closing.is_alive():
        _log.warning(
            "tracekit receiver: stopped at its deadline while a write still waits for the store"
            " (locked by another process?); that write ends in the background"
        )
    elif failure:
        raise failure[0]


def connection_cap(wanted: int) -> int:
    """``wanted``, lowered to fit under this process's file descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - _RESERVED_DESCRIPTORS))
