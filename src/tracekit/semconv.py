"""Attribute names: OpenTelemetry's semantic conventions, plus tracekit's own.

HTTP's conventions are stable; the messaging conventions are still in Development status
upstream: names may still change between releases of the conventions, and tracekit follows
their current ones.

One module so that a renamed convention is one edit, and so that readers of tracekit's data (the
reconstruction engine, dashboards' documentation) can import the same names.
"""

from typing import Final

__all__ = [
    "CELERY_TASK_NAME",
    "CLIENT_ADDRESS",
    "CLOCK_STEPPED_BACK_NS",
    "CORRELATION_ID",
    "DELIVERY_OUTCOME",
    "DROPPED_ATTRIBUTES",
    "DROPPED_EVENTS",
    "DROPPED_LINKS",
    "ERROR_TYPE",
    "HTTP_KNOWN_METHODS",
    "HTTP_REQUEST_METHOD",
    "HTTP_REQUEST_METHOD_ORIGINAL",
    "HTTP_REQUEST_RESEND_COUNT",
    "HTTP_RESPONSE_STATUS_CODE",
    "HTTP_ROUTE",
    "LINKS_DROPPED",
    "MESSAGING_BATCH_MESSAGE_COUNT",
    "MESSAGING_CONSUMER_GROUP_NAME",
    "MESSAGING_DESTINATION_NAME",
    "MESSAGING_DESTINATION_PARTITION_ID",
    "MESSAGING_DESTINATION_TEMPLATE",
    "MESSAGING_KAFKA_MESSAGE_KEY",
    "MESSAGING_KAFKA_MESSAGE_TOMBSTONE",
    "MESSAGING_KAFKA_OFFSET",
    "MESSAGING_MESSAGE_CONVERSATION_ID",
    "MESSAGING_MESSAGE_ID",
    "MESSAGING_OPERATION_NAME",
    "MESSAGING_OPERATION_TYPE",
    "MESSAGING_REDELIVERED",
    "MESSAGING_SYSTEM",
    "NETWORK_PROTOCOL_VERSION",
    "OTHER_METHOD",
    "PUBLISH_TIME",
    "QUEUE_WAIT_MS",
    "RETRY_COUNT",
    "RPC_METHOD",
    "RPC_SERVICE",
    "RPC_SYSTEM",
    "SCHEDULED_DELAY_MS",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "URL_FULL",
    "URL_PATH",
    "URL_SCHEME",
    "USER_AGENT_ORIGINAL",
]

# HTTP (stable)
HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_REQUEST_METHOD_ORIGINAL: Final = "http.request.method_original"
HTTP_REQUEST_RESEND_COUNT: Final = "http.request.resend_count"
HTTP_ROUTE: Final = "http.route"
# The methods the HTTP conventions know (RFC 9110's, PATCH, and QUERY); any other is _OTHER.
HTTP_KNOWN_METHODS: Final = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY")
)
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
URL_PATH: Final = "url.path"
URL_SCHEME: Final = "url.scheme"
URL_FULL: Final = "url.full"
SERVER_ADDRESS: Final = "server.address"
CLIENT_ADDRESS: Final = "client.address"
SERVER_PORT: Final = "server.port"
NETWORK_PROTOCOL_VERSION: Final = "network.protocol.version"
ERROR_TYPE: Final = "error.type"
USER_AGENT_ORIGINAL: Final = "user_agent.original"
OTHER_METHOD: Final = "_OTHER"

# Messaging (Development status upstream: current names)
MESSAGING_SYSTEM: Final = "messaging.system"
MESSAGING_DESTINATION_NAME: Final = "messaging.destination.name"
MESSAGING_OPERATION_TYPE: Final = "messaging.operation.type"
MESSAGING_OPERATION_NAME: Final = "messaging.operation.name"
MESSAGING_MESSAGE_ID: Final = "messaging.message.id"
# the message's own correlation ID (AMQP's correlation_id property: an RPC's request and reply)
MESSAGING_MESSAGE_CONVERSATION_ID: Final = "messaging.message.conversation_id"
MESSAGING_BATCH_MESSAGE_COUNT: Final = "messaging.batch.message_count"
MESSAGING_DESTINATION_PARTITION_ID: Final = "messaging.destination.partition.id"
# A destination's low-cardinality form (a pattern subscription's pattern): spans are named by it.
MESSAGING_DESTINATION_TEMPLATE: Final = "messaging.destination.template"
MESSAGING_CONSUMER_GROUP_NAME: Final = "messaging.consumer.group.name"
MESSAGING_KAFKA_OFFSET: Final = "messaging.kafka.offset"
# the record's key as text, where it has one (application data: bounded, see _kafka.key_text)
MESSAGING_KAFKA_MESSAGE_KEY: Final = "messaging.kafka.message.key"
# true on a record without a value (deleting its key from a compacted topic); absent: false
MESSAGING_KAFKA_MESSAGE_TOMBSTONE: Final = "messaging.kafka.message.tombstone"

# RPC (gRPC and others, over HTTP/2 or their own transport)
RPC_SYSTEM: Final = "rpc.system"
RPC_SERVICE: Final = "rpc.service"
RPC_METHOD: Final = "rpc.method"

# tracekit's own
CORRELATION_ID: Final = "correlation.id"
QUEUE_WAIT_MS: Final = "tracekit.queue_wait_ms"
PUBLISH_TIME: Final = "tracekit.publish_time_unix_nano"
# the part of a CONSUMER span's queue wait that its producer asked for (a Celery countdown or eta):
# the message was not due before then
SCHEDULED_DELAY_MS: Final = "tracekit.scheduled_delay_ms"
# on a span stored with no duration because it ended before it started: how far back its clock went
CLOCK_STEPPED_BACK_NS: Final = "tracekit.clock_stepped_back_ns"
# on Celery spans: the task, which tells apart the many tasks one queue carries
CELERY_TASK_NAME: Final = "tracekit.celery.task_name"
# on a retry's CONSUMER span: which retry it is (1 for the second attempt)
RETRY_COUNT: Final = "tracekit.retry_count"
# true on a CONSUMER span of a message the broker delivered again: an earlier delivery was not
# acknowledged (its consumer stopped, was killed, or gave it back)
MESSAGING_REDELIVERED: Final = "tracekit.messaging.redelivered"
# "unknown": the PRODUCER span ended before the client reported the delivery's outcome
DELIVERY_OUTCOME: Final = "tracekit.delivery.outcome"
# on a batch's CONSUMER span: links to producers left out past the span's link limit (the
# batch's first messages keep theirs)
LINKS_DROPPED: Final = "tracekit.messaging.links_dropped"
# on a span (or one of its events or links), or a log record, the collector received with more
# elements than it keeps (see receiver._decoded.MAX_SPAN_ELEMENTS): everything of that list
# dropped, what the sender counted (OTLP's dropped_*_count) plus what the collector cut
DROPPED_ATTRIBUTES: Final = "tracekit.dropped_attributes_count"
DROPPED_EVENTS: Final = "tracekit.dropped_events_count"
DROPPED_LINKS: Final = "tracekit.dropped_links_count"
