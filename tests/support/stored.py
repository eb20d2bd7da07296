"""A request's path as ``tracekit trace ID --format json`` shows it, once its spans are stored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from conditions import wait_for

from tracekit.path import reconstruct
from tracekit.records import BackendError
from tracekit.store import Store


def stored_path(
    store: Path,
    correlation_id: str,
    until: Callable[[dict[str, Any]], bool] = lambda path: bool(path["spans"]),
    timeout: float = 15,
) -> dict[str, Any]:
    """The JSON document of ``correlation_id``'s path in the store at ``store``, once ``until``
    holds of it (by default: it has a span), waiting up to ``timeout`` s for the exports."""

    def found() -> dict[str, Any] | None:
        try:
            with Store(store) as source:
                path = reconstruct(source, correlation_id)
        except BackendError:
            return None  # the server's first export has not created the store yet
        if path is None:
            return None
        document = path.to_json()
        return document if until(document) else None

    result: dict[str, Any] = wait_for(found, timeout, f"the path of {correlation_id}")
    return result
