"""Automatic instrumentation of HTTP clients and message-queue libraries.

Each entry names the tracekit module and class that instruments one library. Importing this package
imports none of the target libraries: each instrumentor hooks its target's import.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from tracekit._runtime.guard import report_once
from tracekit.instrumentation._base import Instrumentor

__all__ = ["INSTRUMENTORS", "instrument", "record_awaiting", "selected", "uninstrument"]

# name -> "module:class"; TRACEKIT_INSTRUMENT and TRACEKIT_DISABLED_INSTRUMENTATIONS take the names
INSTRUMENTORS = {
    "aio_pika": "tracekit.instrumentation.aio_pika:AioPikaInstrumentor",
    "aiohttp": "tracekit.instrumentation.aiohttp:AiohttpInstrumentor",
    "botocore": "tracekit.instrumentation.botocore:BotocoreInstrumentor",
    "celery": "tracekit.instrumentation.celery:CeleryInstrumentor",
    "confluent_kafka": "tracekit.instrumentation.confluent_kafka:ConfluentKafkaInstrumentor",
    "httpx": "tracekit.instrumentation.httpx:HttpxInstrumentor",
    "kafka": "tracekit.instrumentation.kafka:KafkaInstrumentor",
    "pika": "tracekit.instrumentation.pika:PikaInstrumentor",
    "redis": "tracekit.instrumentation.redis:RedisInstrumentor",
    "requests": "tracekit.instrumentation.requests:RequestsInstrumentor",
    "urllib3": "tracekit.instrumentation.urllib3:Urllib3Instrumentor",
}

_active: dict[str, Instrumentor] = {}
# Every instrumentor made in this process, by name, instrumented again by the next init: its
# import hook stays registered in wrapt, which cannot remove one, so a new instrumentor per init
# added a hook (and kept the old instrumentor) for each library not imported yet.
_made: dict[str, Instrumentor] = {}


def selected(include: Iterable[str], exclude: Iterable[str]) -> list[str]:
    """The instrumentation names that ``include`` ("all" or names) minus ``exclude`` select."""
    include, exclude = set(include), set(exclude)
    unknown = (include | exclude) - set(INSTRUMENTORS) - {"all"}
    if unknown:
        raise ValueError(f"unknown instrumentation(s): {', '.join(sorted(unknown))}")
    names = set(INSTRUMENTORS) if "all" in include else include
    return sorted(names - exclude)


def instrument(names: Iterable[str]) -> None:
    """Instrument the named libraries (now if imported, otherwise when they are imported)."""
    for name in names:
        if name in _active:
            continue
        try:
            instrumentor = _made.get(name) or _make(name)
            instrumentor.instrument()
            _active[name] = instrumentor
        except Exception as error:
            report_once(f"instrumentation {name}", error)


def _make(name: str) -> Instrumentor:
    module_name, _, class_name = INSTRUMENTORS[name].partition(":")
    instrumentor: Instrumentor = getattr(importlib.import_module(module_name), class_name)()
    _made[name] = instrumentor
    return instrumentor


def record_awaiting() -> None:
    """Record the sends still waiting for their delivery's outcome (a Kafka delivery report),
    outcome unknown: the process is stopping, and may end without exit hooks (uvicorn raises
    SIGTERM again after its lifespan shutdown). A report coming later is handled as for a
    span recorded past the bound."""
    for instrumentor in list(_active.values()):
        instrumentor.record_awaiting()


def uninstrument(names: Iterable[str] | None = None) -> None:
    """Undo the named instrumentations (default: every one tracekit applied)."""
    for name in list(_active) if names is None else names:
        instrumentor = _active.pop(name, None)
        if instrumentor is not None:
            instrumentor.uninstrument()
