"""RabbitMQ's naming, shared by the pika and aio-pika instrumentations.

Spans and metrics are named after a message's destination: the exchange, or the queue on the
default exchange. A queue the broker names is one per RPC client (an exclusive reply queue,
``amq.gen-...``) or per channel (direct reply-to): named after it, every client would add a span
name and metric series of its own to a server that answers it. Such a destination is
``(anonymous)``, as OpenTelemetry's messaging conventions name it; the queue's own name stays
in the routing key attribute. aio-pika's robust channels (``connect_robust``) name such a queue
themselves, before declaring it, so that it is declared again under the same name after a
reconnection: ``amq_`` and a random UUID's 32 hex digits; it is ``(anonymous)`` too.
"""

from __future__ import annotations

import re
from typing import Any

from tracekit import semconv
from tracekit._messaging.spans import TEXT, bounded_id

SYSTEM = "rabbitmq"
ROUTING_KEY = "messaging.rabbitmq.destination.routing_key"
DELIVERY_TAG = "messaging.rabbitmq.message.delivery_tag"
ANONYMOUS = "(anonymous)"
ANONYMOUS_DESTINATION = "messaging.destination.anonymous"

_BROKER_NAMED = ("amq.gen-", "amq.rabbitmq.reply-to")
_ROBUSTLY_NAMED = re.compile(r"amq_[0-9a-f]{32}")  # aio-pika's RobustQueue: f"amq_{uuid4().hex}"


def destination_of(name: str) -> str:
    """``name`` as spans and metrics name the destination: ``(anonymous)`` if the broker (or
    aio-pika, for a robust channel) made it up, or if it is empty (AMQP's name for the queue the
    channel declared last)."""
    if not name or name.startswith(_BROKER_NAMED):
        return ANONYMOUS
    if name.startswith("amq_") and _ROBUSTLY_NAMED.fullmatch(name):  # (no regex per message)
        return ANONYMOUS
    return name


def given_name(name: object) -> str:
    """An exchange or routing key as the caller gave it; "" for one that is not text, which the
    client refuses itself: ``str`` of it ran the application's own ``__str__`` first (or raised
    for an int past 4,300 digits), and the caller got that error in place of the client's."""
    return name if isinstance(name, str) else ""


def attributes_of(
    destination: str,
    routing_key: object,
    server: tuple[str, int] | None = None,
    delivery_tag: object = None,
    conversation_id: object = None,
) -> dict[str, Any]:
    """The RabbitMQ attributes of a span to or from ``destination`` (as ``destination_of``
    names it), with the message's routing key, the broker the client is connected to (see
    ``server_of``), the message's ``correlation_id`` property (``conversation_id``) and, on the
    consumer's side, its delivery tag."""
    attributes: dict[str, Any] = {}
    if isinstance(routing_key, str) and routing_key:  # (str() of another: see conversation_id)
        attributes[ROUTING_KEY] = routing_key[:256]
    if destination == ANONYMOUS:
        attributes[ANONYMOUS_DESTINATION] = True
    if server is not None:
        attributes[semconv.SERVER_ADDRESS], attributes[semconv.SERVER_PORT] = server
    if type(delivery_tag) is int:
        attributes[DELIVERY_TAG] = delivery_tag
    # Text only: str() of another object is the application's code (its __str__ raising, or an
    # int past 4,300 digits), which ran before pika's own check refused the property.
    if isinstance(conversation_id, TEXT) and conversation_id:
        attributes[semconv.MESSAGING_MESSAGE_CONVERSATION_ID] = bounded_id(conversation_id)
    return attributes


def server_of(host: object, port: object) -> tuple[str, int] | None:
    """The broker as ``server.address`` and ``server.port`` give it: the host and port the
    connection was opened to (no lookup); None where the client does not say."""
    if isinstance(host, str) and host and type(port) is int:
        return host[:256], port
    return None
