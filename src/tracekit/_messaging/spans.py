"""What both sides of a queue hop build their spans from: the messaging attributes every span
carries, a message ID bounded for an attribute, tracekit's messaging tracer, and the span that
records what happened to a message after its own span was recorded."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, TracerProvider

from tracekit import semconv
from tracekit._runtime.guard import mark_failed

MAX_MESSAGE_ID = 256
# Built once: ``bytes | bytearray`` written in the call builds a union on every message.
BYTES = (bytes, bytearray)
TEXT = (str, bytes, bytearray)


def base_attributes(
    system: str,
    destination: str,
    operation_type: str,
    operation_name: str,
    message_id: object,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The attributes of a messaging span (``extra`` first: these names win)."""
    attributes: dict[str, Any] = dict(extra or {})
    attributes[semconv.MESSAGING_SYSTEM] = system
    attributes[semconv.MESSAGING_DESTINATION_NAME] = destination
    attributes[semconv.MESSAGING_OPERATION_TYPE] = operation_type
    attributes[semconv.MESSAGING_OPERATION_NAME] = operation_name
    if message_id is not None:
        attributes[semconv.MESSAGING_MESSAGE_ID] = bounded_id(message_id)
    return attributes


def bounded_id(message_id: object) -> str:
    """A broker's message ID as text of at most ``MAX_MESSAGE_ID`` characters."""
    if isinstance(message_id, BYTES):
        message_id = bytes(message_id[:MAX_MESSAGE_ID]).decode("utf-8", "replace")
    return str(message_id)[:MAX_MESSAGE_ID]


def tracer_for(tracer_provider: TracerProvider | None) -> trace.Tracer:
    """tracekit's messaging tracer of ``tracer_provider`` (default: the global provider).

    The tracer of the provider asked for last is kept: the SDK builds a new tracer on every
    ``get_tracer``, and the global proxy's tracer forwards every call through the proxy.
    """
    global _last_tracer
    provider = trace.get_tracer_provider() if tracer_provider is None else tracer_provider
    last = _last_tracer
    if last is not None and last[0] is provider:
        return last[1]
    tracer = trace.get_tracer("tracekit.messaging", tracer_provider=provider)
    _last_tracer = (provider, tracer)
    return tracer


_last_tracer: tuple[TracerProvider, trace.Tracer] | None = None


def record_failed_after(
    tracer: trace.Tracer,
    ended: trace.Span,
    name: str,
    attributes: dict[str, Any],
    error: BaseException,
) -> None:
    """A zero-length CLIENT span ``name`` under the span ``ended``, failed with ``error``: what
    became of a message once its span was recorded and could no longer change (a nack after
    the handler returned, a Kafka delivery failure reported after the send)."""
    now = time.time_ns()
    parent = trace.set_span_in_context(ended, otel_context.Context())
    span = tracer.start_span(name, parent, SpanKind.CLIENT, attributes, start_time=now)
    mark_failed(span, error)
    span.end(now)
