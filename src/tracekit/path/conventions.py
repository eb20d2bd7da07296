"""Reading HTTP, network and messaging attributes written under either semantic conventions.

tracekit writes the stable OpenTelemetry names (``tracekit.semconv``). Many SDKs and agents in
the field still write the older ones (``http.method``, ``http.target``, ``http.status_code``,
``net.peer.name``, ``messaging.destination``...; e.g. ``@opentelemetry/instrumentation-http``
by default, many Java, Go and .NET agents). Everything in the path engine and the views that
reads such an attribute asks here, so both read the same.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from tracekit import semconv
from tracekit.records import Attributes, AttributeValue, SpanRecord

__all__ = ["OLDER_NAMES", "attribute", "clock_stepped_back", "text", "url_path", "url_path_in"]

# stable name -> the older names that meant the same, most likely first
OLDER_NAMES: dict[str, tuple[str, ...]] = {
    semconv.HTTP_REQUEST_METHOD: ("http.method",),
    semconv.HTTP_RESPONSE_STATUS_CODE: ("http.status_code",),
    semconv.URL_FULL: ("http.url",),
    semconv.URL_SCHEME: ("http.scheme",),
    semconv.SERVER_ADDRESS: ("net.peer.name", "net.host.name"),
    semconv.SERVER_PORT: ("net.peer.port", "net.host.port"),
    semconv.NETWORK_PROTOCOL_VERSION: ("http.flavor",),
    semconv.MESSAGING_DESTINATION_NAME: ("messaging.destination",),
    semconv.MESSAGING_OPERATION_TYPE: ("messaging.operation",),
    semconv.MESSAGING_MESSAGE_ID: ("messaging.message_id",),
}


def attribute(record: SpanRecord, name: str) -> AttributeValue:
    """The value of the stable attribute ``name``, else of its older equivalent (or None)."""
    return _attribute_in(record.attributes, name)


def _attribute_in(attributes: Attributes, name: str) -> AttributeValue:
    value = attributes.get(name)
    if value is None:
        for older in OLDER_NAMES.get(name, ()):
            value = attributes.get(older)
            if value is not None:
                break
    return value


def text(record: SpanRecord, name: str) -> str | None:
    """``attribute`` as text."""
    value = attribute(record, name)
    return None if value is None else str(value)


def url_path(record: SpanRecord) -> str | None:
    """The request path: ``url.path``, else the older ``http.target`` or a full URL's path."""
    return url_path_in(record.attributes)


def url_path_in(attributes: Attributes) -> str | None:
    """``url_path`` of a span with ``attributes``."""
    found = attributes.get(semconv.URL_PATH)
    if found is None:
        found = attributes.get("http.target")
    if isinstance(found, str):
        return found.split("?", 1)[0] or "/"
    full = _attribute_in(attributes, semconv.URL_FULL)
    if full is None:
        return None
    try:
        return urlsplit(str(full)).path or "/"
    except ValueError:
        return None


def clock_stepped_back(record: SpanRecord) -> bool:
    """Kept lasting no time because its clock stepped back while it ran: the store and the
    remote backends mark such a span with the step (``tracekit.clock_stepped_back_ns``). How
    long it took is unknown, not zero."""
    step = record.attributes.get(semconv.CLOCK_STEPPED_BACK_NS)
    return isinstance(step, int) and not isinstance(step, bool) and step > 0
