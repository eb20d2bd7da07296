"""The embedded span store (SQLite, WAL): what ``tracekit collector`` and
``TRACEKIT_EXPORTER=store`` write and what ``tracekit trace`` reads.

Nothing here is imported by ``import tracekit``; services pay for it only when they choose the
store exporter.
"""

from __future__ import annotations

from tracekit.store._paths import default_store_path
from tracekit.store._requests import RequestGroup
from tracekit.store._retention import Retention, parse_duration, parse_size
from tracekit.store._schema import SchemaTooNewError
from tracekit.store._store import ServiceCallCount, Store

__all__ = [
    "RequestGroup",
    "Retention",
    "SchemaTooNewError",
    "ServiceCallCount",
    "Store",
    "default_store_path",
    "parse_duration",
    "parse_size",
]
