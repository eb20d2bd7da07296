"""What the two Kafka clients' instrumentation shares: the publish hop and the header form.

Both kafka-python and confluent-kafka take record headers as ``(str, bytes)`` pairs (confluent
also a dict) in a ``headers`` argument; tracekit adds its own, replacing same-named ones, since a
repeated ``traceparent`` would make every consumer restart the trace.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tracekit import messaging

SYSTEM = "kafka"


def traced_send(
    send: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    headers_position: int | None,
) -> Any:
    """Call ``send(topic, ...)`` inside a PRODUCER span, with context added to its headers
    (``headers_position`` None: the broker's message format has no headers, none are added)."""
    topic = args[0] if args else kwargs.get("topic")
    if not isinstance(topic, str) or messaging.publishing():
        return send(*args, **kwargs)
    carrier: dict[str, str] = {}
    with messaging.publish(carrier, system=SYSTEM, destination=topic):
        if headers_position is not None:
            args, kwargs = _with_headers(args, kwargs, carrier, headers_position)
        return send(*args, **kwargs)


def _with_headers(
    args: tuple[Any, ...], kwargs: dict[str, Any], carrier: dict[str, str], position: int
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments with tracekit's headers merged into ``headers``."""
    positional = len(args) > position
    merged = merged_headers(args[position] if positional else kwargs.get("headers"), carrier)
    if merged is None:
        return args, kwargs
    if positional:
        return (*args[:position], merged, *args[position + 1 :]), kwargs
    return args, {**kwargs, "headers": merged}


def merged_headers(given: object, carrier: dict[str, str]) -> Any:
    """``given`` (pairs or dict) with tracekit's headers replacing same-named ones; None: leave."""
    if not carrier:
        return None
    ours = {name.lower() for name in carrier}
    encoded = [(name, value.encode("utf-8")) for name, value in carrier.items()]
    if isinstance(given, dict):
        kept = {k: v for k, v in given.items() if not _named(k, ours)}
        return {**kept, **dict(encoded)}
    if given is None or isinstance(given, list | tuple):
        pairs = [p for p in given or () if not (isinstance(p, tuple) and _named(p[0], ours))]
        return pairs + encoded
    return None  # a header form the client rejects anyway: let it say so


def _named(name: object, names: set[str]) -> bool:
    return isinstance(name, str) and name.lower() in names
