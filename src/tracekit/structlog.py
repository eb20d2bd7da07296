"""A structlog processor that adds the request's correlation fields to every event.

Put it early in the processor chain, before the renderer::

    import structlog
    from tracekit.structlog import add_tracekit_context

    structlog.configure(processors=[add_tracekit_context, structlog.processors.JSONRenderer()])

It adds ``correlation_id``, ``trace_id``, ``span_id`` and ``service`` (the same names the stdlib
records get), skips the ones that have no value outside a request, and never overwrites a key the
event already has. Like a stdlib record, an event about an exception a request raised, logged
after that request's context was put back (Starlette's handler for ``Exception``), names it.
structlog itself is not imported here: a processor is a plain callable.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from tracekit.logs import EMPTY, _fields_logged_with, _record_fields

__all__ = ["add_tracekit_context"]

_EventDict = MutableMapping[str, Any]


def add_tracekit_context(logger: Any, method_name: str, event_dict: _EventDict) -> _EventDict:
    """structlog processor: add the current correlation fields to ``event_dict``.

    In ``ProcessorFormatter``'s ``foreign_pre_chain`` the event is a stdlib record's
    (``_record``), which may be formatted far from where it was logged (a ``QueueListener``'s
    thread): the fields the record was stamped with are the ones added then.
    """
    record = event_dict.get("_record")
    if isinstance(record, logging.LogRecord) and getattr(record, "service", None) is not None:
        fields = _record_fields(record)  # those with a value, a correlation ID only if valid
    else:  # outside a request, an exception it raised names it (a framework's error handler)
        logged = _fields_logged_with(event_dict.get("exc_info"))
        fields = {key: value for key, value in logged.items() if value != EMPTY}
    for key, value in fields.items():
        event_dict.setdefault(key, value)
    return event_dict
