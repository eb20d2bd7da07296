"""``grpc.health.v1.Health/Check`` on the OTLP/gRPC port: what a Kubernetes ``grpc`` probe and
grpc_health_probe ask. SERVING once the writer process can commit, NOT_SERVING while it starts
and once a stop began (``/health``'s ``ok``, ``starting`` and ``stopping``); NOT_FOUND for a
service the port does not serve.

Written here rather than taken from grpcio-health-checking: its two messages have one field
each, and its servicer keeps a status that every change (ready, stopping) would have to be
pushed into, where this one reads the receiver's at each call. ``HealthCheckRequest`` (string
``service = 1``) and ``HealthCheckResponse`` (enum ``status = 1``) are on the wire what the
well-known ``StringValue`` and ``Int32Value`` are, so those parse and write them. ``Watch`` is
not served: probes do not use it, and a gRPC client's own health checking takes its
UNIMPLEMENTED for healthy.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.wrappers_pb2 import Int32Value, StringValue

HEALTH = "grpc.health.v1.Health"
SERVING, NOT_SERVING = 1, 2  # HealthCheckResponse.ServingStatus


def health_handler(
    services: Collection[str], serving: Callable[[], bool]
) -> grpc.GenericRpcHandler:
    """``Check`` for the whole server ("") and each of ``services``; ``serving`` tells which
    status to answer."""

    async def check(request: bytes, context: Any) -> bytes:
        try:
            service = StringValue.FromString(request).value
        except DecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not a HealthCheckRequest")
        if service and service not in services:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        answer: bytes = Int32Value(value=SERVING if serving() else NOT_SERVING).SerializeToString()
        return answer

    return grpc.method_handlers_generic_handler(
        HEALTH, {"Check": grpc.unary_unary_rpc_method_handler(check)}
    )
