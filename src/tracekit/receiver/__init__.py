"""tracekit's OTLP/HTTP receiver: traces and logs (protobuf or JSON) into the embedded store.

Metrics are acknowledged but not stored: they belong in Prometheus.
"""

from __future__ import annotations

from tracekit.receiver.server import DEFAULT_HOST, DEFAULT_PORT, Receiver, ReceiverConfig

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Receiver", "ReceiverConfig"]
