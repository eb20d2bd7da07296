"""The spans of work under way, recorded when SIGTERM's default action is about to end the process.

That action ends the process in the middle of a message's handler or a request's: their spans
would never end, and the path lost the hop, the handler's log lines their span. Each such span
is kept here while open (weakly: a span never ended is not kept), and ``record_all`` ends those
still open, failed with ``HandlerInterrupted``. Taking a span out is how its end is claimed:
whoever takes it (its handler, or ``record_all``) ends it, once.
"""

from __future__ import annotations

import os
import weakref
from contextlib import suppress

from opentelemetry import trace

from tracekit._runtime.guard import mark_failed


class HandlerInterrupted(Exception):
    """The process ended (SIGTERM's default action) while a message or a request was being
    handled: how its span ends, failed, recorded just before the process goes."""


_open: weakref.WeakValueDictionary[int, trace.Span] = weakref.WeakValueDictionary()
# Set by ``record_all``: from then on, a span no longer kept may be one it has ended.
_ending = False
# A forked child (a pool forked in a handler) is not running its parent's handlers: what it
# inherited is not its own to record when it is terminated.
os.register_at_fork(after_in_child=_open.clear)


def track(span: trace.Span) -> None:
    """Keep ``span``, just started, until its handler ``claim``s it."""
    with suppress(TypeError):  # a span class of a host's own without weak references
        _open[id(span)] = span


def claim(span: trace.Span) -> bool:
    """Whether the caller is the one to end ``span``: False once ``record_all`` has."""
    return _open.pop(id(span), None) is span or not _ending


def record_all() -> None:
    """The process is about to end, handlers still running (in any thread): end every span
    still open, failed. What the handlers made current is left as it is: they never get to go
    on. Nor are metrics counted: a process that ends is scraped no more, and the fewer locks
    this takes, the fewer the interrupted thread may hold."""
    global _ending
    _ending = True
    while True:
        try:  # another thread may start or end a span meanwhile: a stable snapshot
            keys = list(_open.keys())
            break
        except RuntimeError:
            continue
    interrupted = HandlerInterrupted("SIGTERM ended the process before the handler returned")
    for key in keys:
        span = _open.pop(key, None)
        if span is not None and span.is_recording():
            mark_failed(span, interrupted)
            span.end()
