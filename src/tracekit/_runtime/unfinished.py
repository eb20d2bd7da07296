"""The spans of work under way, recorded when the process is about to end in the middle of it.

SIGTERM's default action ends the process in the middle of a message's handler or a request's,
and of the call out (an HTTP request, a publish) the handler was waiting on; so does the
interpreter's exit for a daemon thread's. Their spans would never end: the path lost the hop,
the call it was stuck in, the handler's log lines their span. Each such span is kept here while
open (weakly: a span never ended is not kept), and ``record_all`` ends those still open, failed
with ``HandlerInterrupted``. Taking a span out is how its end is claimed: whoever takes it (its
handler or client, or ``record_all``) ends it, once. The spans tracekit did not open (the
application's own, a contrib instrumentation's) are kept too, by ``OpenSpanProcessor``: their
code ends them, and nothing of it runs after ``record_all``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from weakref import ref

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span, SpanProcessor
from opentelemetry.trace import SpanKind

from tracekit._runtime.guard import mark_failed, safe


class HandlerInterrupted(Exception):
    """The process ended (SIGTERM's default action, or the interpreter's exit for a daemon
    thread) while a message or a request was being handled, or a call out was waiting for its
    answer: how its span ends, failed, recorded just before the process goes."""


# Weak references to the open spans, each removing itself as its span is collected: a set of
# them costs the hot path (every request, message and call out) half a WeakValueDictionary's.
_open: set[ref[trace.Span]] = set()
# Set by ``record_all``: from then on, a span no longer kept may be one it has ended.
_ending = False
# A forked child (a pool forked in a handler) is not running its parent's handlers: what it
# inherited is not its own to record when it is terminated.
os.register_at_fork(after_in_child=_open.clear)

_OUTGOING = (SpanKind.CLIENT, SpanKind.PRODUCER)
# Long enough for another thread to finish a write to a span (microseconds); a lock held longer
# is held for good, by the thread SIGTERM interrupted.
_LOCK_WAIT_S = 0.1


Completing = Callable[[trace.Span], None]


class _KeptWith(ref[trace.Span]):
    """A kept span's reference (equal to a plain one), with what ``record_all`` adds to the span
    before ending it: what its handler would have added had it returned."""

    __slots__ = ("completing",)
    completing: Completing

    # (ref's __init__ only checks that it has one or two arguments: __new__ set the callback.)
    def __new__(cls, span: trace.Span, completing: Completing) -> _KeptWith:
        kept = super().__new__(cls, span, _open.discard)
        kept.completing = completing
        return kept


def track(span: trace.Span, completing: Completing | None = None) -> None:
    """Keep ``span``, just started, until its handler (or client) ``claim``s it; if
    ``record_all`` ends it instead, ``completing(span)`` runs first."""
    try:
        if completing is None:
            _open.add(ref(span, _open.discard))
            return
        kept = _KeptWith(span, completing)
    except TypeError:  # a span class of a host's own without weak references
        return
    _open.discard(kept)  # kept already as it started (OpenSpanProcessor), without it
    _open.add(kept)


class OpenSpanProcessor(SpanProcessor):
    """Keeps every span the tracer provider starts, whoever starts it: at SIGTERM an
    application's own span (``tracer.start_as_current_span``) or a contrib instrumentation's
    still open is recorded, failed, with tracekit's. About half a microsecond a span. Kept
    weakly, a span leaves as it is collected; ``record_all`` passes over those ended. (Nothing
    to do at its end: the SDK hands ``on_end`` a copy, a ``ReadableSpan``, not the span.)"""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        track(span)


def claim(span: trace.Span) -> bool:
    """Whether the caller is the one to end ``span``: False once ``record_all`` has."""
    try:
        _open.remove(ref(span))
    except (KeyError, TypeError):
        return not _ending
    return True


class _EndedAgain(logging.Filter):
    """Drops the SDK's warning for a span ended twice, once ``record_all`` has run: the other
    threads go on while the process ends (during SIGTERM's flush, or the exit's last hooks),
    and their code ends the spans recorded as interrupted as it unwinds. The SDK keeps the
    first end; its warning reached the application's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Calling end() on an ended span."


_ENDED_AGAIN = _EndedAgain()
_SDK_LOGGER = "opentelemetry.sdk.trace"  # where the SDK's Span.end logs that warning


def record_all(cause: str) -> None:
    """The process is about to end, handlers still running (in any thread): end every span
    still open, failed with ``cause`` ("SIGTERM ended the process"), all at one instant (a
    call no later than the handler waiting on it).
    What the handlers made current is left as it is: they never get to go on. Nor are metrics
    counted: a process that ends is scraped no more, and the fewer locks this takes, the fewer
    the interrupted thread may hold."""
    global _ending
    _ending = True
    logging.getLogger(_SDK_LOGGER).addFilter(_ENDED_AGAIN)  # (takes no lock)
    while True:
        try:  # another thread may start or end a span meanwhile: a stable snapshot
            refs = list(_open)
            break
        except RuntimeError:
            continue
    handler = HandlerInterrupted(f"{cause} before the handler returned")
    call = HandlerInterrupted(f"{cause} before the call returned")
    now = time.time_ns()
    for span_ref in refs:
        span = span_ref()
        if span is not None and free(span) and claim(span) and span.is_recording():
            if isinstance(span_ref, _KeptWith):
                safe("interrupted span", lambda: span_ref.completing(span))  # noqa: B023 (now)
            outgoing = getattr(span, "kind", None) in _OUTGOING
            mark_failed(span, call if outgoing else handler)
            span.end(now)


def free(span: trace.Span) -> bool:
    """False for a span whose lock (the SDK's ``Span._lock``) stays held: the thread SIGTERM
    interrupted was inside its ``set_attribute``, and waits for this recording. Ending that span
    would wait for good, and every span after it with it: that one alone is left out."""
    lock = getattr(span, "_lock", None)
    if lock is None or not hasattr(lock, "acquire"):
        return True
    if not lock.acquire(timeout=_LOCK_WAIT_S):
        return False
    lock.release()
    return True
