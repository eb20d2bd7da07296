"""What a span is called in a diff, so the same work matches across two requests.

The route template (``GET /orders/{id}``), else the messaging destination (``orders.created``),
else the span name with ids stripped: ``/orders/123`` and ``/orders/456`` are one node. An HTTP
client span named only by its method (``GET``, as OpenTelemetry names them) is named by its URL's
path, ids stripped, so two calls from one caller to different places stay two nodes.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import urlsplit

from tracekit.records import SpanRecord

__all__ = [
    "HTTP_METHODS",
    "ID_PLACEHOLDER",
    "MAX_NAME_CHARS",
    "TASK_NAME",
    "node_name",
    "strip_ids",
]

MAX_NAME_CHARS = 200
ID_PLACEHOLDER = "{id}"
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER"}
)
# tracekit's Celery integration: many tasks share one queue, the task name tells them apart
TASK_NAME = "tracekit.celery.task_name"

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_ID = re.compile(
    r"^(?:\d+"  # 1042
    rf"|{_UUID}"
    r"|(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}"  # hex digests and ids: 5f0c2e9a
    r"|[A-Za-z]+[-_]\d+"  # sku-42, order_1042 (but not v1 or oauth2)
    r"|(?=[\w-]*\d)[\w-]{20,})$"  # long opaque tokens: base62 ids, JWT-ish keys
)
_TOKEN = re.compile(r"[^/\s:=?&,;#]+")


@lru_cache(maxsize=4096)  # a request repeats a few names many times
def strip_ids(text: str) -> str:
    """``text`` with each id-like token (numbers, UUIDs, hex, ``sku-42``) replaced by ``{id}``."""
    return _TOKEN.sub(lambda m: ID_PLACEHOLDER if _ID.match(m.group()) else m.group(), text)


def node_name(record: SpanRecord) -> str:
    """The name two requests' spans are matched by (at most ``MAX_NAME_CHARS`` characters)."""
    route = _text(record, "http.route")
    if route:
        method = _text(record, "http.request.method")
        return _bounded(f"{method} {route}" if method else route)
    destination = _text(record, "messaging.destination.name")
    if destination:
        task = _text(record, TASK_NAME)
        return _bounded(f"{destination} {task}" if task else destination)
    name = record.name
    if name.upper() in HTTP_METHODS:
        path = _url_path(record)
        if path:
            name = f"{name} {path}"
    return _bounded(strip_ids(name))


def _text(record: SpanRecord, name: str) -> str | None:
    value = record.attributes.get(name)
    return str(value)[: MAX_NAME_CHARS * 2] if value not in (None, "") else None


def _url_path(record: SpanRecord) -> str | None:
    path = _text(record, "url.path")
    if path:
        return path
    full = _text(record, "url.full")
    if not full:
        return None
    try:
        return urlsplit(full).path or None
    except ValueError:
        return None


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_NAME_CHARS else text[: MAX_NAME_CHARS - 1] + "…"
