"""tracekit's OTLP receiver: traces and logs over HTTP (protobuf or JSON) and gRPC into the
embedded store.

Metrics are acknowledged and dropped: they belong in Prometheus.
"""

from __future__ import annotations

from tracekit.receiver._address import host_port
from tracekit.receiver.server import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HOST,
    DEFAULT_PORT,
    Receiver,
    ReceiverConfig,
)

__all__ = [
    "DEFAULT_GRPC_PORT",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "Receiver",
    "ReceiverConfig",
    "host_port",
]
