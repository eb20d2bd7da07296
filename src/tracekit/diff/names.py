"""What a span is called in a diff, so the same work matches across two requests.

The route template (``GET /orders/{id}``), else the messaging destination (``orders.created``),
else the span name with ids stripped: ``/orders/123`` and ``/orders/456`` are one node. An HTTP
client span named only by its method (``GET``, as OpenTelemetry names them, or ``HTTP GET`` under
the older conventions) is named by its URL's path, ids stripped, so two calls from one caller to
different places stay two nodes. A queue RabbitMQ named (an RPC client's ``amq.gen-...`` reply
queue, direct reply-to) is ``(anonymous)``, as tracekit's own instrumentation names it, so other
SDKs' spans match from client to client too. Attributes are read under either conventions
(``tracekit.path.conventions``): an SDK writing ``http.method`` tells GET from POST too.

A server span named only by its method is another SDK's without a route (OpenTelemetry JS names
one ``GET`` when no framework set ``http.route``): ``root_name`` names it as ``node_name`` does,
so ``search`` lists it as ``diff`` shows it (``GET /reserve/{id}``), bounded like a route.
"""

from __future__ import annotations

import re
from functools import lru_cache

from tracekit import semconv
from tracekit._messaging import amqp
from tracekit.path.conventions import text, url_path_in
from tracekit.records import Attributes, SpanRecord

__all__ = [
    "HTTP_METHODS",
    "ID_PLACEHOLDER",
    "MAX_NAME_CHARS",
    "TASK_NAME",
    "node_name",
    "root_name",
    "strip_ids",
]

MAX_NAME_CHARS = 200
ID_PLACEHOLDER = "{id}"
HTTP_METHODS = semconv.HTTP_KNOWN_METHODS | {"_OTHER"}
TASK_NAME = semconv.CELERY_TASK_NAME  # many Celery tasks share one queue: this tells them apart

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_ID = re.compile(
    r"^(?:\d+"  # 1042
    rf"|{_UUID}"
    r"|(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}"  # hex digests and ids: 5f0c2e9a
    r"|[A-Za-z]+[-_]\d+"  # sku-42, order_1042 (but not v1 or oauth2)
    r"|\d{4}-\d\d-\d\d(?:T[\w.%:+-]*)?"  # a day (an exchange rate's, a report's): 2024-01-31
    r"|[\w.%+-]+(?:@|%40)[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}"  # an email: alice@example.com
    r"|(?=[\w-]*\d)[\w-]{20,})$"  # long opaque tokens: base62 ids, JWT-ish keys
)
# A URL path's segment is a value far more often than a span name's word is: a third-party API's
# ids (Stripe's cus_NffrFeUfNV2Hib, an order number ORD-2024-000123, a base62 key 8f3Kd9sLq2, an
# ASIN B07XJ8C8F5) differ in every request, and left in, two identical calls were two nodes. Words
# of span names (computeSha256Hash) stay as they are, and so do a route's own words with a digit
# (list-v2, S3Bucket, p99Latency): taken for ids, two routes would be one node.
_MIXED_CASE_ID = r"(?=[A-Za-z0-9]*\d)(?=[A-Za-z0-9]*[a-z])(?=[A-Za-z0-9]*[A-Z])[A-Za-z0-9]"
_PATH_ID = re.compile(
    # a prefix, then parts of digits (ORD-2024-000123) or of random characters (cus_Nffr...)
    rf"^(?:[A-Za-z]+(?:[-_](?:\d+|{_MIXED_CASE_ID}+|(?=[A-Za-z0-9]*\d)[A-Za-z0-9]{{8,}}))+"
    r"|(?=[A-Z0-9]*\d)[A-Z0-9]{8,})$"  # upper-case codes
)
_BASE62_ID = re.compile(rf"^{_MIXED_CASE_ID}{{8,}}$")
_LEADING_WORD = re.compile(r"^[A-Z]?[a-z]*")
_LOWER_RUN = re.compile(r"[a-z]+")
_DIGIT_RUN = re.compile(r"\d+")
_SEPARATOR = r"/\s:=?&,;#"
# A time keeps its colons, as HTTP clients leave them in a path (2024-01-31T10:00:00Z): split
# there, its seconds were a word of their own (":15Z"), and two calls at two times two nodes.
_TIME = r"\d{4}-\d\d-\d\dT\d\d(?::\d\d){1,2}(?:\.\d+)?(?:Z|[+-]\d\d(?::?\d\d)?)?"
_TOKEN = re.compile(rf"{_TIME}(?![^{_SEPARATOR}])|[^{_SEPARATOR}]+")


@lru_cache(maxsize=4096)  # a request repeats a few names many times
def strip_ids(text: str) -> str:
    """``text`` with each id-like token (numbers, UUIDs, hex, ``sku-42``, days, emails, and in a
    URL path other ids too, ``_PATH_ID``) replaced by ``{id}``."""
    return _TOKEN.sub(lambda m: ID_PLACEHOLDER if _is_id(m) else m.group(), text)


def _is_id(token: re.Match[str]) -> bool:
    if _ID.match(token.group()):
        return True
    in_path = token.start() > 0 and token.string[token.start() - 1] == "/"
    return in_path and _is_path_id(token.group())


def _is_path_id(segment: str) -> bool:
    if _PATH_ID.match(segment):
        return True
    return _BASE62_ID.match(segment) is not None and not _reads_as_words(segment)


def _reads_as_words(segment: str) -> bool:
    """Whether a mixed-case ``segment`` with digits is camel-case words (S3Bucket, p99Latency,
    Ec2Instances): one number, and past the first word no lower-case run shorter than two
    letters, which a random key of that length seldom has (8f3Kd9sLq2, NffrFeUfNV2Hib)."""
    rest = _LEADING_WORD.sub("", segment, count=1)
    if len(_DIGIT_RUN.findall(segment)) != 1:
        return False
    return all(len(run) >= 2 for run in _LOWER_RUN.findall(rest))


def node_name(record: SpanRecord) -> str:
    """The name two requests' spans are matched by (at most ``MAX_NAME_CHARS`` characters)."""
    route = _text(record, semconv.HTTP_ROUTE)
    if route:
        method = _text(record, semconv.HTTP_REQUEST_METHOD)
        return _bounded(f"{method} {route}" if method else route)
    destination = _text(record, semconv.MESSAGING_DESTINATION_NAME)
    if destination:
        destination = amqp.destination_of(destination)  # one reply queue per client: not a name
        task = _text(record, TASK_NAME)
        return _bounded(f"{destination} {task}" if task else destination)
    return _by_path(record.name, record.attributes) or _bounded(strip_ids(record.name))


def root_name(name: str, attributes: Attributes) -> str:
    """A request's name in a listing, from its root span's ``name`` and ``attributes``: the
    name, but a span named only by its method by its method and path, ids stripped, as
    ``node_name`` names it (``GET`` with ``url.path`` ``/reserve/42``: ``GET /reserve/{id}``)."""
    return _by_path(name, attributes) or name


def _by_path(name: str, attributes: Attributes) -> str | None:
    """``GET /reserve/{id}`` for a span named only ``GET`` whose URL path is ``/reserve/42``."""
    method = _method_only(name)
    path = url_path_in(attributes) if method else None
    return _bounded(strip_ids(f"{method} {path[: MAX_NAME_CHARS * 2]}")) if path else None


def _method_only(name: str) -> str | None:
    """``GET`` for a span named ``GET`` (or ``HTTP GET``, the older conventions' client name)."""
    upper = name.upper()
    if upper.startswith("HTTP "):
        upper = upper[5:]
    return upper if upper in HTTP_METHODS else None


def _text(record: SpanRecord, name: str) -> str | None:
    value = text(record, name)
    return value[: MAX_NAME_CHARS * 2] if value else None


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_NAME_CHARS else text[: MAX_NAME_CHARS - 1] + "…"
