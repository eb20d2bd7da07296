"""A structlog processor that adds the request's correlation fields to every event.

Put it early in the processor chain, before the renderer::

    import structlog
    from tracekit.structlog import add_tracekit_context

    structlog.configure(processors=[add_tracekit_context, structlog.processors.JSONRenderer()])

It adds ``correlation_id``, ``trace_id``, ``span_id`` and ``service`` (the same names the stdlib
records get), skips the ones that have no value outside a request, and never overwrites a key the
event already has. structlog itself is not imported here: a processor is a plain callable.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from tracekit.logs import EMPTY, current_fields

__all__ = ["add_tracekit_context"]

_EventDict = MutableMapping[str, Any]


def add_tracekit_context(logger: Any, method_name: str, event_dict: _EventDict) -> _EventDict:
    """structlog processor: add the current correlation fields to ``event_dict``."""
    for key, value in current_fields().items():
        if value != EMPTY:
            event_dict.setdefault(key, value)
    return event_dict
