"""The OTLP/gRPC side: the trace, logs and metrics services on one ``grpc.server``.

Requests reach ``IngestService.export`` as the bytes of their protobuf message (no generated
stubs: the handlers neither deserialize nor serialize), so they take the same decoders, checks,
store path and memory budget as OTLP/HTTP. grpc decompresses gzip and refuses a message larger
than the body limit (``RESOURCE_EXHAUSTED``) before our handler runs. Imported only when a gRPC
port is asked for: ``grpcio`` comes with the ``cli`` extra.
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from tracekit.receiver._address import family, host_port
from tracekit.receiver._admission import MemoryBudget
from tracekit.receiver._errors import RequestError
from tracekit.receiver._service import PROTOBUF, IngestService

_SERVICES = {
    "opentelemetry.proto.collector.trace.v1.TraceService": "traces",
    "opentelemetry.proto.collector.logs.v1.LogsService": "logs",
    "opentelemetry.proto.collector.metrics.v1.MetricsService": "metrics",
}
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,  # not retried: the store is damaged
    503: grpc.StatusCode.UNAVAILABLE,  # OTLP exporters retry UNAVAILABLE
}
_WORKERS = 16  # RPCs handled at once; more wait in grpc, and past _QUEUED are refused by it
_QUEUED = 256


class GrpcReceiver:
    """An OTLP/gRPC server on ``host:port`` (0: any free port) feeding ``service``."""

    def __init__(
        self, host: str, port: int, service: IngestService, budget: MemoryBudget, max_body: int
    ) -> None:
        self.service = service
        self.budget = budget
        self.server = grpc.server(
            ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="tracekit-grpc"),
            handlers=[_handler(name, signal, self._export) for name, signal in _SERVICES.items()],
            options=[
                ("grpc.max_receive_message_length", max_body),
                ("grpc.so_reuseport", 0),  # a second collector must fail to bind, not share
            ],
            maximum_concurrent_rpcs=_QUEUED,
        )
        self.port = self._bind(host, port)

    def _bind(self, host: str, port: int) -> int:
        target = host_port(host, port)
        try:
            bound = self.server.add_insecure_port(target)
        except RuntimeError:  # "Failed to bind to address ...; set GRPC_VERBOSITY=debug ..."
            bound = 0
        if not bound:
            raise OSError(f"cannot listen on {target}: {_why_not(host, port)}")
        return int(bound)

    def start(self) -> None:
        """Serve in grpc's own threads."""
        self.server.start()

    def stop(self, grace: float) -> None:
        """Refuse new RPCs and let the ones in flight finish (up to ``grace`` s)."""
        self.server.stop(grace).wait()

    def _export(self, signal: str, request: bytes, context: Any) -> bytes:
        try:
            with self.budget.reservation() as reservation:
                reservation.cover(len(request), PROTOBUF)
                return self.service.export(signal, PROTOBUF, request, reservation)
        except RequestError as error:
            context.abort(_CODES.get(error.status, grpc.StatusCode.UNKNOWN), error.message)
            raise  # abort raised already; this line only tells type checkers so


def _why_not(host: str, port: int) -> str:
    """What the system says to listening on ``host:port`` (``Address already in use``): grpc's
    own error never says why."""
    try:
        with socket.socket(family(host), socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc's socket does
            probe.bind((host, port))
    except OSError as error:
        return error.strerror or str(error)
    return "grpc could not bind it"  # free a moment later: nothing more to say


def _handler(name: str, signal: str, export: Any) -> grpc.GenericRpcHandler:
    def handle(request: bytes, context: Any) -> bytes:
        return export(signal, request, context)  # type: ignore[no-any-return]

    return grpc.method_handlers_generic_handler(
        name, {"Export": grpc.unary_unary_rpc_method_handler(handle)}
    )
