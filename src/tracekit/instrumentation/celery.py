"""Celery, through its signals: context in task headers, the task run as the CONSUMER span.

- ``before_task_publish`` writes trace context, correlation ID and publish time into the task
  message's headers with ``messaging.publish``: a PRODUCER span ``send <queue>`` (the queue its
  routing key names; a key that names none of the app's queues, as a topic exchange's, names
  the exchange: ``_destination_of``). It ends when
  ``Celery.send_task`` (which every ``apply_async``, retry and canvas goes through, and which is
  wrapped for this) returns or raises, so the span and the publish metrics cover the broker call
  and a publish that raised is failed, not sent. (No signal follows a failed publish.) Outside
  ``send_task`` the span ends at once.
- ``task_prerun`` opens the CONSUMER span ``process <queue>`` as a child of the PRODUCER span
  (``tracekit.messaging.redelivered`` when the broker delivered the message again), and
  makes the message's correlation ID current; ``task_failure`` marks it failed; ``task_postrun``
  ends it, with Celery's final state (``tracekit.celery.task_state``). A run stopped by an
  exception Celery does not handle (``revoke(terminate=True)``) has no final state: it is
  failed with that exception; one stopped so at its hard time limit with ``TimeLimitExceeded``,
  state ``FAILURE``, as Celery records it. So is one that raised ``Reject`` (state
  ``REJECTED``), with the reason it gave, from the task or from its ``on_success`` or
  ``after_return``. The span covers the task function, and queue wait covers any
  ``countdown``/``eta``.
- ``task_revoked`` (in the worker's main process) records a task discarded before it ran, revoked
  or expired in the queue: a CONSUMER span that ends at once, state ``REVOKED``, failed with
  ``TaskRevokedError: expired`` when it expired. ``task_unknown`` records one the worker dropped
  because it has no task of that name: failed with ``NotRegistered``, state ``FAILURE``;
  ``task_rejected`` one it would not take as a task (content it does not accept, an invalid
  message): failed with Celery's reason, state ``REJECTED``. ``task_failure`` with
  ``WorkerLostError`` for a child killed by a signal (in the main process: a prefork child killed
  in the middle of a task, which recorded nothing) records a CONSUMER span failed with it, state
  ``FAILURE``; ``task_failure`` with ``TimeLimitExceeded`` there, a run its child was stopped in
  at its hard time limit without ending its span (a long C call: SIGKILL), once the child is
  gone (``_prefork``, ``_time_limit_reported``). A killed child's task whose message Celery
  requeues (``acks_late`` and ``reject_on_worker_lost``) gets no signal: its span, state
  ``REJECTED``, is recorded as the worker's ``Request.reject`` gives the message back, while
  ``Request.on_failure`` handles the loss (both wrapped).
- A task run eagerly (``task_always_eager``, ``Task.apply()``) is not published: its CONSUMER
  span is a child of the caller's current span, and it keeps the caller's correlation ID (when
  the caller has none, the one it passed in its headers), as a worker would. It is named by the
  queue its routes would send it to (a ``queue=`` given to ``apply_async`` is not passed on to
  the eager run, so it is not seen).
- A retry is published from inside the failing attempt, so attempt N+1 is a descendant of attempt
  N in the same trace; each retry also carries ``tracekit-first-attempt`` so that its CONSUMER span
  links to the first attempt's span (link attribute ``tracekit.link = retry_of``) and records
  ``tracekit.retry_count``. ``task_retry`` marks the failed attempt: ERROR with the retry's cause
  (the ``exc`` given to ``retry()``, else the exception being handled when it was called) and
  state ``RETRY``; a retry with no cause (polling, as ``chord_unlock`` does) only has the state.
  Run eagerly, a retry is not published: ``Task.apply`` runs the retry's signature after the
  attempt, and ``task_retry`` puts ``tracekit-first-attempt`` in its headers.

A group or chord applied outside any span is applied inside an INTERNAL span ``celery group`` or
``celery chord`` (``apply_async`` of both wrapped), so that its tasks, and a chord's callback,
published from the header task that finished last, are one trace; applied with no correlation
ID current, it gets one new ID for all its tasks.

A wait for a result under a span (``AsyncResult.get()`` and ``wait()``, ``ResultSet.get()``,
``join()`` and ``join_native()``, all wrapped) is an INTERNAL span ``celery wait``, failed with
what the wait raises (``TimeoutError``); not in Celery's own ``chord_unlock``.

Signals are Celery's own extension point: besides ``send_task``, the canvas, the results'
waits and a worker request's ``on_failure`` and ``reject``, nothing is patched, and
uninstrumenting disconnects (the receivers that end a run once the runs under way have ended).
"""

from __future__ import annotations

import functools
import re
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, MutableMapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any, TypeGuard

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from tracekit import correlation, messaging, propagation, semconv
from tracekit._messaging.headers import reading_for
from tracekit._messaging.received import correlation_id_in
from tracekit._messaging.spans import tracer_for
from tracekit._runtime import state as _state
from tracekit._runtime.guard import guarded, instrumentation_suppressed, mark_failed, safe
from tracekit.instrumentation._base import Instrumentor, Patch
from tracekit.instrumentation._prefork import RunsUnderWay

__all__ = [
    "FIRST_ATTEMPT_HEADER",
    "RETRY_COUNT",
    "SYSTEM",
    "TASK_ID",
    "TASK_NAME",
    "TASK_STATE",
    "CeleryInstrumentor",
]

SYSTEM = "celery"
TASK_NAME = semconv.CELERY_TASK_NAME
TASK_STATE = "tracekit.celery.task_state"
TASK_ID = "tracekit.celery.task_id"
RETRY_COUNT = semconv.RETRY_COUNT
FIRST_ATTEMPT_HEADER = "tracekit-first-attempt"

_HEADER_NAMES = (
    propagation.TRACEPARENT,
    propagation.TRACESTATE,
    propagation.BAGGAGE,
    messaging.PUBLISH_TIME_HEADER,
    FIRST_ATTEMPT_HEADER,
)


@dataclass
class _Running:
    delivery: messaging.Delivery
    first_attempt: str | None
    error: BaseException | None = None
    # A run under the same task id that this one interrupted (an eager Task.replace() runs the
    # replacement inside the task it replaces): current again when this one ends.
    outer: _Running | None = None
    started: float = field(default_factory=time.monotonic)


# (task id, thread) -> its run in this worker. Two runs of one task id can overlap in a threads
# pool (a caller's own task_id sent twice, a redelivery): each thread ends its own.
_running: dict[tuple[str, int], _Running] = {}
_lock = threading.Lock()


@dataclass(slots=True)
class _Sending:
    """The ``Celery.send_task`` call under way: its app, and the publishes before_task_publish
    began inside it."""

    app: Any
    publishings: list[messaging.Publishing] = field(default_factory=list)


_sending: ContextVar[_Sending | None] = ContextVar("tracekit_celery_sending", default=None)


def _run_key(task_id: object) -> tuple[str, int]:
    """Celery sends a run's signals, and a retry's publish, in the thread that runs the task."""
    return str(task_id), threading.get_ident()


@dataclass(slots=True)
class _Connection(Patch):
    """A receiver connected to a Celery signal; undone by disconnecting it."""

    receiver: Any = None

    def undo(self) -> None:
        self.live.clear()
        self.owner.disconnect(self.receiver, dispatch_uid=self.attribute)


@dataclass(slots=True)
class _RunEnding(_Connection):
    """A receiver that ends runs (``task_failure``, ``task_retry``, ``task_postrun``): undone
    while runs begun under tracekit are under way, it stays connected until the last of them
    ends, or their spans would stay open and their correlation IDs current in their threads."""

    def undo(self) -> None:
        self.live.clear()
        with _lock:
            if _running:
                _lingering.append(self)
                return
        _Connection.undo(self)


# Run-ending receivers undone while runs were under way: disconnected when the last one ends.
_lingering: list[_RunEnding] = []


def _disconnect_lingering() -> None:
    """Called with ``_lock`` held, once no run is under way."""
    while _lingering:
        _Connection.undo(_lingering.pop())


class CeleryInstrumentor(Instrumentor):
    """Connects tracekit's receivers to Celery's publish and task-run signals."""

    target = "celery.app.base"  # imports celery.signals: both are there when it is

    def instrument(self) -> None:
        """Also hooks the modules patched apart from the app (``_patch_later_modules``), before
        any of them is imported."""
        if not self._hooked:
            for name, patch in self._later_modules().items():
                wrapt.register_post_import_hook(patch, name)  # (run now if imported: inactive)
        super().instrument()

    def patch(self, module: ModuleType) -> None:
        from celery import signals

        with _lock:  # instrumented again: the lingering receivers are the ones connected now
            _lingering.clear()
        self.wrap(module.Celery, "send_task", _traced_send_task)
        self._patch_later_modules()
        self._connect(signals.before_task_publish, _before_publish)
        self._connect(signals.task_failure, _task_failure, _RunEnding)
        self._connect(signals.task_retry, _task_retry, _RunEnding)
        self._connect(signals.task_postrun, _task_postrun, _RunEnding)
        # Undone in reverse: no run begins once the receivers that end runs count those left.
        self._connect(signals.task_prerun, _task_prerun)
        self._connect(signals.task_revoked, _task_revoked)
        self._connect(signals.task_unknown, _task_unknown)
        self._connect(signals.task_rejected, _task_rejected)
        self._connect(signals.worker_init, _worker_init)

    def _later_modules(self) -> dict[str, Callable[[ModuleType], None]]:
        """The modules imported apart from the app, and what patches each: ``celery.canvas``
        (groups, chords) and ``celery.result`` (waits for results) when first used, the
        worker's consumer and requests only by a worker."""
        return {
            "celery.canvas": self._patch_canvas,
            "celery.result": self._patch_results,
            "celery.worker.consumer.consumer": self._patch_worker_consumer,
            "celery.worker.request": self._patch_worker_request,
        }

    def _patch_later_modules(self) -> None:
        """Patch those already imported; the hooks ``instrument`` registered patch the others
        when their import is complete. ``import celery.canvas`` imports the app, whose patch
        runs here, while canvas is still half made (no ``group`` yet): its hook patches it."""
        for name, patch in self._later_modules().items():
            module = sys.modules.get(name)
            if module is not None and not getattr(module.__spec__, "_initializing", False):
                patch(module)

    def _patch_canvas(self, canvas: ModuleType) -> None:
        self._patch_module(canvas.group, "celery.canvas", lambda: self._wrap_canvas(canvas))

    def _wrap_canvas(self, canvas: ModuleType) -> None:
        self.wrap(canvas.group, "apply_async", _traced_canvas("group"))
        self.wrap(canvas._chord, "apply_async", _traced_canvas("chord"))

    def _patch_results(self, module: ModuleType) -> None:
        self._patch_module(module.AsyncResult, "celery.result", lambda: self._wrap_results(module))

    def _wrap_results(self, module: ModuleType) -> None:
        waits = [
            (module.AsyncResult, "get"),  # (not EagerResult's own get)
            (module.AsyncResult, "wait"),  # (get's deprecated name, bound to get)
            *((module.ResultSet, join) for join in ("get", "join", "join_native")),
        ]  # (GroupResult's too; a ResultSet's get calls a join)
        for owner, name in waits:
            if name in vars(owner):  # a Celery that drops one keeps the others wrapped
                self.wrap(owner, name, _traced_wait)

    def _patch_worker_consumer(self, module: ModuleType) -> None:
        consumer = module.Consumer
        self._patch_module(
            consumer,
            "celery.worker.consumer",
            lambda: self.wrap(consumer, "create_task_handler", _task_handler_with_ids),
        )

    def _patch_worker_request(self, module: ModuleType) -> None:
        self._patch_module(
            module.Request, "celery.worker.request", lambda: self._wrap_request(module)
        )

    def _wrap_request(self, module: ModuleType) -> None:
        self.wrap(module.Request, "on_failure", _on_failure_of_lost_child)
        self.wrap(module.Request, "reject", _rejected_for_lost_child)

    def _patch_module(self, owner: Any, where: str, wrap: Callable[[], None]) -> None:
        """Patch a module through ``wrap`` unless its ``owner`` is patched already. (Also run by
        the module's import, which must not fail for it.)"""
        if self.active and not any(p.owner is owner for p in self._patches):
            safe(f"instrumenting {where}", wrap)

    def _connect(
        self, signal: Any, receiver: Callable[..., None], kind: type[_Connection] = _Connection
    ) -> None:
        uid = f"tracekit.{receiver.__name__}"
        signal.connect(receiver, weak=False, dispatch_uid=uid)  # (once per uid, however often)
        self._patches.append(kind(signal, uid, receiver=receiver))


def _traced_send_task(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    sending = _Sending(instance)
    token = _sending.set(sending)
    error: BaseException | None = None
    try:
        result = wrapped(*args, **kwargs)
        safe("celery sent task", lambda: _remember_task(result, args, kwargs))
        return result
    except BaseException as raised:
        error = raised
        raise
    finally:
        _sending.reset(token)
        kind = type(error) if error is not None else None
        for publishing in reversed(sending.publishings):  # the last begun is the innermost
            publishing.__exit__(kind, error, None)


def _task_handler_with_ids(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``Consumer.create_task_handler()``: the worker's handler of every task message, in its
    main process, before any signal of the task. It runs with the message's correlation ID
    current, so what Celery logs of the message there ("Task ... received", an unregistered
    task, an invalid message) carries the ID, as the task's own lines do."""
    handler = wrapped(*args, **kwargs)

    def on_task_received(message: Any) -> Any:
        token = safe("celery received message", lambda: _received_correlation_id(message))
        try:
            return handler(message)
        finally:
            if token is not None:
                correlation.reset_correlation_id(token)

    return on_task_received


def _received_correlation_id(message: Any) -> Token[str | None] | None:
    """Make the correlation ID ``message`` carries current (none: nothing, as no ID is known
    yet); the token to put back what was current."""
    headers = getattr(message, "headers", None)
    if not isinstance(headers, Mapping) or not CeleryInstrumentor.latest_active():
        return None
    reading = reading_for(_state.current_options())
    found = correlation_id_in(_raw_message_headers(headers), None, reading)
    return correlation.set_correlation_id(found) if found is not None else None


def _traced_canvas(kind: str) -> Callable[..., Any]:
    """A group or chord applied outside any span (a script, a job with only a correlation ID)
    publishes each of its tasks as a trace of its own, and a chord's callback joins only the
    trace of the task that finished last. Applied inside an INTERNAL span ``celery <kind>``,
    they are one trace, the callback's included."""

    def traced(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        given = safe("celery canvas correlation", lambda: _canvas_correlation_id(instance, kwargs))
        try:
            return _applied_in_span(kind, wrapped, args, kwargs)
        finally:
            if given is not None:
                correlation.reset_correlation_id(given)

    return traced


def _canvas_correlation_id(canvas: Any, options: dict[str, Any]) -> Token[str | None] | None:
    """Applied with no correlation ID current (a script, a beat-like loop), a canvas gets one
    new ID for all its tasks, current only while it is applied: each task's publish would
    otherwise give its message an ID of its own (``messaging.publish``). Not when the caller
    gave one in the canvas's ``headers``: every task's publish keeps that one."""
    if correlation.correlation_id() is not None or instrumentation_suppressed():
        return None
    if _callers_correlation_id(canvas, options) is not None:
        return None
    return correlation.set_correlation_id(correlation.new_correlation_id())


def _callers_correlation_id(canvas: Any, options: dict[str, Any]) -> str | None:
    """The correlation ID in the headers a canvas is applied with (or was given with ``set``)."""
    given = getattr(canvas, "options", None)
    headers = options.get("headers") or (given.get("headers") if isinstance(given, dict) else None)
    if not isinstance(headers, Mapping):
        return None
    return correlation_id_in(headers, None, reading_for(_state.current_options()))


def _applied_in_span(
    kind: str, wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    span = safe("celery canvas span", lambda: _canvas_span(kind))
    if span is None:
        return wrapped(*args, **kwargs)
    context = trace.set_span_in_context(span)
    return _called_in(context, lambda: wrapped(*args, **kwargs), functools.partial(_end, span))


def _called_in(
    context: otel_context.Context,
    call: Callable[[], Any],
    end: Callable[[BaseException | None], None],
) -> Any:
    """``call()`` with ``context`` current, then ``end`` with what it raised (or None)."""
    token = otel_context.attach(context)
    error: BaseException | None = None
    try:
        return call()
    except BaseException as raised:
        error = raised
        raise
    finally:
        otel_context.detach(token)
        end(error)


def _canvas_span(kind: str) -> trace.Span | None:
    """The span to apply a canvas in, when none is current and tracekit makes spans."""
    ctx = otel_context.get_current()
    if trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    if instrumentation_suppressed(context=ctx) or _state.current_options().correlation_only:
        return None
    cid = correlation.correlation_id()
    attributes = {semconv.CORRELATION_ID: cid} if cid is not None else {}
    return tracer_for(None).start_span(f"celery {kind}", ctx, SpanKind.INTERNAL, attributes)


@guarded(None)
def _end(span: trace.Span, error: BaseException | None) -> None:
    if error is not None:
        mark_failed(span, error)
    span.end()


def _traced_wait(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``AsyncResult.get()`` (``ResultSet.get()`` or a join for a group's) in a request: the
    request is blocked on a worker, and only its own span said so, with no part of it that
    waits. Inside an INTERNAL span ``celery wait``, with the task's name when it was sent here,
    and failed with what the caller gets (``TimeoutError`` when no worker ran the task in time)."""
    span = safe("celery wait span", lambda: _wait_span(instance))
    if span is None:
        return wrapped(*args, **kwargs)
    context = otel_context.set_value(_WAITING, True, trace.set_span_in_context(span))
    end = functools.partial(_end_wait, span, instance)
    return _called_in(context, lambda: wrapped(*args, **kwargs), end)


# Set in the context of a wait's span: a group's wait asks each of its results, in no new span.
_WAITING = otel_context.create_key("tracekit-celery-wait")


def _wait_span(result: Any) -> trace.Span | None:
    """The span of a wait for ``result``: under the current span only (a script's or a job's
    wait outside one would be a trace of its own), and not for a result already read."""
    ctx = otel_context.get_current()
    if not trace.get_current_span(ctx).get_span_context().is_valid or ctx.get(_WAITING):
        return None
    if instrumentation_suppressed(context=ctx) or _state.current_options().correlation_only:
        return None
    if getattr(result, "_cache", None) or _in_chord_unlock():
        return None
    attributes = {} if hasattr(result, "results") else _task_of(result)  # (a group's: none)
    return tracer_for(None).start_span("celery wait", ctx, SpanKind.INTERNAL, attributes)


def _in_chord_unlock() -> bool:
    """Celery's own ``chord_unlock`` joins a chord's header inside its run once the header is
    ready (backends without native chords): an instant wait, and Celery's business."""
    from celery import current_task

    return getattr(current_task, "name", None) == "celery.chord_unlock"


def _task_of(result: Any) -> dict[str, str]:
    """The name (when sent from here) and id of the task ``result`` stands for."""
    task_id = getattr(result, "id", None)
    ids = {TASK_ID: task_id[:256]} if isinstance(task_id, str) and task_id else {}
    return {**_task(_sent_tasks.get(result)), **ids}


@guarded(None)
def _end_wait(span: trace.Span, result: Any, error: BaseException | None) -> None:
    """End a wait's span with the task's final state, as the wait read it (no new call to the
    result backend), and what the wait raised."""
    meta = getattr(result, "_cache", None)
    state = meta.get("status") if isinstance(meta, dict) else None
    if isinstance(state, str):
        span.set_attribute(TASK_STATE, state[:32])
    _end(span, error)


# The task each result sent from here stands for: what a wait for it is named after.
_sent_tasks: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _remember_task(result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    name = args[0] if args else kwargs.get("name")
    if isinstance(name, str) and result is not None:
        _sent_tasks[result] = name


@guarded(None)
def _before_publish(
    sender: Any = None,
    headers: Any = None,
    body: Any = None,
    routing_key: Any = None,
    exchange: Any = None,
    **_: Any,
) -> None:
    if not isinstance(headers, MutableMapping):
        return  # nowhere to carry context
    carrier: dict[str, str] = {}
    sending = _sending.get()
    queue = _destination_of(routing_key, exchange, sending.app if sending is not None else None)
    task = _task_fields(headers, body)
    publishing = messaging.publish(
        carrier,
        system=SYSTEM,
        destination=queue,
        message_id=task.get("id"),  # the task id, as on the CONSUMER span
        attributes=_task(sender),
    )._beside(headers)  # a caller's own X-Correlation-ID there is the task's outside a request
    publishing.__enter__()
    if sending is None:  # not under send_task: a span that ends at once, as inject's
        publishing.__exit__(None, None, None)
    else:
        sending.publishings.append(publishing)
    headers.update(carrier)
    first = _first_attempt_of(task)
    if first is not None:
        headers[FIRST_ATTEMPT_HEADER] = first


def _task(name: object) -> dict[str, str]:
    return {TASK_NAME: str(name)[:256]} if name else {}


def _task_fields(headers: Mapping[str, Any], body: object) -> Mapping[str, Any]:
    """Where the message keeps the task's id and retry count: the headers (protocol 2), or the
    body (protocol 1, whose headers hold only what is added to them, tracekit's included)."""
    if "id" not in headers and isinstance(body, Mapping):
        return body
    return headers


def _first_attempt_of(task: Mapping[str, Any]) -> str | None:
    """For a retry published by the running attempt: the first attempt's traceparent."""
    running = _running.get(_run_key(task.get("id")))
    if running is None or not task.get("retries"):
        return None
    return running.first_attempt or _traceparent_of(running)


def _traceparent_of(running: _Running) -> str | None:
    span = running.delivery.span
    if span is None:
        return None
    context = span.get_span_context()
    return propagation.format_traceparent(context.trace_id, context.span_id, context.trace_flags)


@guarded(None)
def _task_prerun(task_id: Any = None, task: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    if task_id is None or request is None:
        return
    headers = _message_headers(request)
    present = {name: value for name, value in headers.items() if value is not None}
    retries = getattr(request, "retries", 0)
    first = _first_attempt_header(present.pop(FIRST_ATTEMPT_HEADER, None), retries)
    eager = getattr(request, "is_eager", False)
    if eager:
        _continue_caller(present)
    delivery = messaging.consume(
        present,
        system=SYSTEM,
        destination=(
            _routed_queue_of(task, request) if eager else _queue_of(request, _app_of(task))
        ),
        message_id=task_id,
        attributes={**_task(getattr(task, "name", None)), **_redelivery(request)},
        due_unix_nano=None if eager else _due_of(request),
    )
    with _lock:
        key = _run_key(task_id)
        _running[key] = _Running(delivery.start(), first, outer=_running.get(key))
    _mark_retry(delivery, retries, first)
    if _runs_in_children is not None and not eager and isinstance(task_id, str):
        _runs_in_children.started(task_id)


def _redelivery(request: Any) -> dict[str, bool]:
    """Marks a message the broker delivered again (an ``acks_late`` task whose worker was
    killed, an ETA task held by a worker that stopped, a ``Reject(requeue=True)``): the run
    before it left no span, or one that did not finish, and its queue wait counts from the
    first publish."""
    info = getattr(request, "delivery_info", None)
    redelivered = isinstance(info, dict) and info.get("redelivered") is True
    return {semconv.MESSAGING_REDELIVERED: True} if redelivered else {}


def _due_of(request: Any) -> int | None:
    """When a task with a ``countdown`` or ``eta`` (a retry's included) was due, in unix ns:
    its wait until then was asked for. The message's ``eta`` is ISO 8601 text from any
    producer; a time without a zone (``apply_async(eta=datetime.utcnow() + ...)``) is UTC, as
    the worker reads it, whatever the app's ``timezone``. None when it has none or it cannot be
    read."""
    eta = getattr(request, "eta", None)
    if isinstance(eta, str) and len(eta) <= 64:
        try:
            eta = datetime.fromisoformat(eta)
        except ValueError:
            return None
    if not isinstance(eta, datetime):
        return None
    moment = eta if eta.tzinfo is not None else eta.replace(tzinfo=UTC)
    try:
        return (moment - _EPOCH) // timedelta(microseconds=1) * 1000
    except OverflowError:
        return None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _continue_caller(present: dict[str, Any]) -> None:
    """Run in the caller (task_always_eager, Task.apply()): nothing was published, the task
    continues the caller's trace and keeps its correlation ID, as a function call would. What
    the caller has current replaces a header it passed itself, as a publish's headers do on a
    worker; a header it passed stays where it has nothing current (a job outside a request)."""
    current: dict[str, str] = {}
    reading_for(_state.current_options()).propagator.inject(current, otel_context.get_current())
    present.update(current)


def _first_attempt_header(value: object, retries: object) -> str | None:
    """The first attempt's traceparent, as a retry carries it. On a first run, or when it is no
    traceparent, the header is ignored: this run is then the one its retries link to (and an
    untrusted value is not published again with every retry)."""
    if not isinstance(value, str) or _retry_count(retries) is None:
        return None
    return value if propagation.parse_traceparent(value) is not None else None


def _message_headers(request: Any) -> dict[str, Any]:
    """The headers tracekit reads, by its names. Celery makes each custom header an attribute of
    the request under the spelling it was sent with, and keeps them all in ``request.headers``:
    a producer's ``X-Correlation-ID`` is read as tracekit's ``x-correlation-id``."""
    found = {name: getattr(request, name, None) for name in _header_names()}
    custom = getattr(request, "headers", None)
    if isinstance(custom, Mapping):
        _fill_from(found, custom)
    return found


def _fill_from(found: dict[str, Any], headers: Mapping[Any, Any]) -> None:
    """Fill the headers ``found`` lacks from ``headers``, whatever the spelling of their names."""
    wanted = {name.lower(): name for name in found}
    for key, value in headers.items():
        name = wanted.get(key.lower()) if isinstance(key, str) else None
        if name is not None and found[name] is None:
            found[name] = value


def _header_names() -> tuple[str, ...]:
    """The request attributes that may hold headers tracekit reads (looked up once per reading)."""
    global _last_header_names
    reading = reading_for(_state.current_options())
    last = _last_header_names
    if last is not None and last[0] is reading:
        return last[1]
    names = (*_HEADER_NAMES, *reading.propagator.carried_fields, *dict.fromkeys(reading.names))
    _last_header_names = (reading, names)
    return names


_last_header_names: tuple[object, tuple[str, ...]] | None = None


def _queue_of(message: Any, app: Any = None) -> str:
    """The destination of a task message (a request, or a kombu message the worker dropped), as
    ``_destination_of`` names it after its delivery's routing key and exchange."""
    info = getattr(message, "delivery_info", None)
    exchange = info.get("exchange") if isinstance(info, dict) else None
    return _destination_of(_routing_key_of(message), exchange, app)


def _destination_of(routing_key: object, exchange: object, app: Any) -> str:
    """The destination a task message's spans and metrics name: the queue its routing key
    names, as Celery routes a task (the queue's name on the default exchange, or the key a
    queue of ``app`` is bound with). A key that names no queue of ``app``'s (a topic
    exchange's ``orders.eu.1234``, one per order) names the exchange it was sent to instead, as
    OpenTelemetry's RabbitMQ conventions name a destination: each key would otherwise be a span
    name and a metric series of its own. ``app`` None (not known): the key."""
    key = _queue_named(routing_key)[:256]
    if not isinstance(exchange, str) or not exchange or _names_a_queue(key, app):
        return key
    return exchange[:256]


def _names_a_queue(key: str, app: Any) -> bool:
    """Whether ``key`` names one of ``app``'s queues, or the key one is bound with; True when
    ``app`` is None or its queues cannot be read (the key then names the destination)."""
    queues = safe("celery queues", lambda: app.amqp.queues) if app is not None else None
    if not isinstance(queues, Mapping):
        return True
    # (``in``: Celery's Queues creates a missing queue on a lookup by [] alone)
    return key in queues or any(getattr(q, "routing_key", None) == key for q in queues.values())


def _app_of(task: Any) -> Any:
    """The Celery app of ``task`` (a task object, or a signal's sender), else the worker's."""
    app = getattr(task, "app", None)
    return app if app is not None else _worker_app


def _queue_named(routing_key: object) -> str:
    """The queue named by a task message's routing key. Celery's native delayed delivery
    (RabbitMQ quorum queues) puts a countdown's seconds in front of the queue's key, as 28
    binary digits (``0.0.[...].1.0.orders``): left out, or each delay would name a span and a
    metric series of its own."""
    return _DELAY_PREFIX.sub("", str(routing_key or "celery"), count=1)


_DELAY_PREFIX = re.compile(r"^(?:[01]\.){28}")


def _routing_key_of(request: Any) -> object:
    info = getattr(request, "delivery_info", None)
    return info.get("routing_key") if isinstance(info, dict) else None


def _routed_queue_of(task: Any, request: Any) -> str:
    """For a task run eagerly, which was not sent: the queue its routes would have sent it to
    (the task's ``queue``, ``task_routes``, ``task_default_queue``), as a worker names it."""
    if _routing_key_of(request):  # apply(routing_key=...) keeps the key it was given
        return _queue_of(request, task.app)
    try:
        options = {"queue": task.queue} if getattr(task, "queue", None) else {}
        route = task.app.amqp.router.route(options, task.name, request.args, request.kwargs)
    except Exception:  # a user's router that fails here would fail a real send too
        return _queue_of(request, task.app)
    queue = route.get("queue")
    return str(route.get("routing_key") or getattr(queue, "routing_key", None) or "celery")[:256]


def _retry_count(retries: object) -> int | None:
    """A message's ``retries`` when it counts a retry, else None. Another producer may send
    anything: a bool, or an int that no OTLP int64 holds (the exporter logs an error, with the
    value, for every span that carries one)."""
    if type(retries) is not int or not 0 < retries <= _MAX_RETRIES:
        return None
    return retries


_MAX_RETRIES = 2**63 - 1


def _mark_retry(delivery: messaging.Delivery, retries: object, first: str | None) -> None:
    span = delivery.span
    count = _retry_count(retries)
    if span is None or count is None:
        return
    span.set_attribute(RETRY_COUNT, count)
    parsed = propagation.parse_traceparent(first) if first else None
    if parsed is not None:
        context = SpanContext(parsed.trace_id, parsed.span_id, True, TraceFlags(parsed.flags & 1))
        span.add_link(context, {"tracekit.link": "retry_of"})


@guarded(None)
def _task_failure(task_id: Any = None, exception: Any = None, sender: Any = None, **_: Any) -> None:
    running = _running.get(_run_key(task_id))
    if running is not None and isinstance(exception, BaseException):
        running.error = exception
    elif running is None and _is_worker_lost(exception):
        _record_lost(sender, task_id, exception)
    elif running is None and _is_time_limit(exception) and isinstance(task_id, str):
        _time_limit_reported(sender, task_id, exception)


def _is_worker_lost(exception: object) -> TypeGuard[BaseException]:
    """A child killed by a signal (billiard says ``signal 9 (SIGKILL)``), which ran no more
    Python. One that exited (``exitcode 3``: a task raised SystemExit) recorded its span."""
    from celery.exceptions import WorkerLostError  # (billiard's, the process pool's)

    return isinstance(exception, WorkerLostError) and _KILLED.search(str(exception)) is not None


_KILLED = re.compile(r"prematurely: signal \d")


def _record_lost(task: Any, task_id: object, error: BaseException, state: str = "FAILURE") -> None:
    """A prefork child that died in the middle of a task (SIGKILL: the OOM killer) recorded
    nothing; the worker's main process, which sends ``task_failure`` with ``WorkerLostError``
    (``task_retry`` when it retries the task) and the task's request current, records a failed
    CONSUMER span in its place."""
    record = _lost_run(task, getattr(task, "request", None), task_id, error, state)
    if record is not None:
        record()


def _lost_run(
    task: Any, request: Any, task_id: object, error: BaseException, state: str = "FAILURE"
) -> Callable[[], None] | None:
    """What records the failed CONSUMER span of a run its child did not record, from the
    task's ``request`` (its context: headers, delivery; a redelivery is marked as on a run's
    span); None without one."""
    if request is None:
        return None
    attributes: dict[str, str | bool] = {**_task(getattr(task, "name", None)), TASK_STATE: state}
    attributes.update(_redelivery(request))
    headers = _message_headers(request)
    app = _app_of(task)
    return functools.partial(_record_discard, request, headers, attributes, error, task_id, app)


def _on_failure_of_lost_child(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``Request.on_failure`` in the worker's main process. For a child killed by a signal and
    a task with ``acks_late`` and ``reject_on_worker_lost``, Celery gives the message back to
    the broker (``reject``, below) and sends no signal: the run killed left no span, and the
    path showed the redelivered run alone. What would record it is at hand while this runs."""
    record = safe("celery lost child", lambda: _lost_child_run(instance, *args, **kwargs))
    if record is None:
        return wrapped(*args, **kwargs)
    token = _losing.set(record)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _losing.reset(token)


def _rejected_for_lost_child(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``Request.reject(requeue=True)`` while a killed child's failure is handled: the run is
    recorded failed with ``WorkerLostError``, state ``REJECTED`` (as for a task that raised
    ``Reject(requeue=True)``); the redelivered run follows in the same trace."""
    result = wrapped(*args, **kwargs)
    record = _losing.get()
    if record is not None and (args[0] if args else kwargs.get("requeue")) is True:
        _losing.set(None)  # (once)
        safe("celery requeued lost run", record)
    return result


def _lost_child_run(
    request: Any, exc_info: Any = None, *_: Any, **__: Any
) -> Callable[[], None] | None:
    """What records the run of ``request`` (a worker's) when ``exc_info`` is its child's loss."""
    lost = getattr(exc_info, "exception", None)
    lost = getattr(lost, "exc", lost)  # (billiard's ExceptionWithTraceback holds it)
    if not _is_worker_lost(lost):
        return None
    task = getattr(request, "task", None)
    context = getattr(request, "_context", None)  # (what Celery gives task_failure)
    return _lost_run(task, context, getattr(request, "id", None), lost, "REJECTED")


# The record of the run of a killed child whose failure the worker is handling, if Celery
# requeues its message (see _on_failure_of_lost_child).
_losing: ContextVar[Callable[[], None] | None] = ContextVar("tracekit_celery_losing", default=None)


def _is_time_limit(exception: object) -> TypeGuard[BaseException]:
    from celery.exceptions import TimeLimitExceeded  # (billiard's, the process pool's)

    return isinstance(exception, TimeLimitExceeded)


def _time_limit_reported(task: Any, task_id: str, error: BaseException) -> None:
    """The worker's main process reports a hard time limit twice before billiard stops the
    child (SIGTERM, then SIGKILL 0.1 s later): from the pool's failure callback, with the task's
    request current, then from ``Request.on_timeout``, without it, just before the stop. The
    first is kept; at the second, a look is planned for once the child is gone: a run it began
    and never ended (a long C call, no signal handler run) is recorded then, failed, as a
    killed child's is. (A Celery whose ``on_timeout`` sends no ``task_failure``: nothing.)"""
    runs = _runs_in_children
    if runs is None or not runs.under_way(task_id):
        return  # no children marking their runs, or this one ended its span
    request = getattr(task, "request", None)
    if getattr(request, "id", None) == task_id:
        while len(_timed_out) >= _MOST_TIMED_OUT:  # (a Celery that never sends the second)
            _timed_out.pop(next(iter(_timed_out)), None)
        _timed_out[task_id] = _lost_run(task, request, task_id, error)
        return
    record = _timed_out.pop(task_id, None)
    if record is not None:
        look = threading.Timer(_CHILD_GONE_S, _record_unless_ended, (runs, task_id, record))
        look.daemon = True
        look.start()


@guarded(None)
def _record_unless_ended(runs: RunsUnderWay, task_id: str, record: Callable[[], None]) -> None:
    if runs.under_way(task_id):
        runs.ended(task_id)  # (recorded once)
        record()


# Runs whose hard time limit the main process reported once, by task id (see
# _time_limit_reported); a handful at most.
_timed_out: dict[str, Callable[[], None] | None] = {}
_MOST_TIMED_OUT = 1000
# billiard sends SIGKILL 0.1 s after SIGTERM: by then the child is gone, or has ended its run.
_CHILD_GONE_S = 1.0


@guarded(None)
def _task_retry(request: Any = None, reason: Any = None, sender: Any = None, **_: Any) -> None:
    task_id = getattr(request, "id", None)
    running = _running.get(_run_key(task_id))
    if running is not None and isinstance(reason, BaseException):
        running.error = _retry_cause(reason)
        if getattr(request, "is_eager", False):
            _carry_first_attempt(running, getattr(reason, "sig", None))
    elif running is None and _is_worker_lost(lost := getattr(reason, "exc", None)):
        # retry_on_worker_lost: the main process retries a task whose child was killed
        _record_lost(sender, task_id, lost, "RETRY")


def _carry_first_attempt(running: _Running, retry: Any) -> None:
    """Run eagerly, a retry is not published: ``Task.apply`` runs the retry's signature after
    this attempt ends. Its headers carry the first attempt to it, as a published retry's do."""
    options = getattr(retry, "options", None)
    first = running.first_attempt or _traceparent_of(running)
    if isinstance(options, dict) and first is not None:
        headers = options.get("headers")
        options["headers"] = {**(headers if isinstance(headers, Mapping) else {}),
                              FIRST_ATTEMPT_HEADER: first}  # fmt: skip


def _interrupting(state: object) -> BaseException | None:
    """What stopped a run that has no final state: Celery sends ``task_postrun`` from a
    ``finally`` while an exception it does not handle goes through (the ``SystemExit`` billiard
    raises when a hard time limit or ``revoke(terminate=True)`` sends SIGTERM, a
    ``KeyboardInterrupt``), so that exception is the one being raised now."""
    return sys.exc_info()[1] if state is None else None


def _retry_cause(retry: BaseException) -> BaseException | None:
    """What made the attempt retry: ``retry(exc=...)``, else the exception being handled. A
    retry with neither is a task polling (Celery's own ``chord_unlock`` waiting for a chord's
    header, a task waiting for something): the attempt did not fail."""
    given = getattr(retry, "exc", None)
    if isinstance(given, BaseException):
        return given
    return retry.__cause__ or retry.__context__


@guarded(None)
def _task_postrun(
    task_id: Any = None, task: Any = None, state: Any = None, retval: Any = None, **_: Any
) -> None:
    with _lock:
        key = _run_key(task_id)
        running = _running.pop(key, None)
        if running is not None and running.outer is not None:
            _running[key] = running.outer
        if not _running:
            _disconnect_lingering()
    if running is None:
        return
    rejected = _rejection_under_way()
    if rejected is not None:
        state, retval = "REJECTED", rejected
    stopped = _interrupting(state)
    timed_out = _hard_time_limit_exceeded(task, running, stopped)
    if timed_out is not None:
        state, stopped = "FAILURE", timed_out
    span = running.delivery.span
    if span is not None and isinstance(state, str):
        span.set_attribute(TASK_STATE, state[:32])
    running.delivery.end(running.error or stopped or _rejection(state, retval))
    if _runs_in_children is not None and isinstance(task_id, str):
        if timed_out is not None:  # billiard's SIGKILL follows in 0.1 s: the span goes out
            _state.flush_current()  # first, else the main process records the run
        _runs_in_children.ended(task_id)


def _hard_time_limit_exceeded(
    task: Any, running: _Running, stopped: BaseException | None
) -> BaseException | None:
    """At a task's hard time limit billiard sends its child SIGTERM, which the child turns into
    ``SystemExit(-241)``: the span said ``SystemExit: -241``. Stopped so once the limit has
    passed, the run failed as the worker records it: state FAILURE in the result backend, and
    ``TimeLimitExceeded(1,)``, what the caller's ``result.get()`` raises. (The worker logs
    ``Hard time limit (1s) exceeded``.) ``revoke(terminate=True)`` sends the same signal,
    before the limit."""
    if not isinstance(stopped, SystemExit) or stopped.code != _SIGTERM_EXIT:
        return None
    limit = _hard_time_limit(task)
    if limit is None or time.monotonic() - running.started < limit - _TIMER_SLACK_S:
        return None
    from celery.exceptions import TimeLimitExceeded

    error: BaseException = TimeLimitExceeded(limit)
    return error


# The worker's hard time limit (``celery worker --time-limit``, else ``task_time_limit``), which
# only the worker knows: its prefork children inherit it, as they are forked after worker_init.
_worker_time_limit: object = None
# The worker's app: what names the queue of a message it dropped without a task to ask.
_worker_app: Any = None
# The runs its prefork children have under way, made before they are forked: see _prefork.
_runs_in_children: RunsUnderWay | None = None


@guarded(None)
def _worker_init(sender: Any = None, **_: Any) -> None:
    global _worker_time_limit, _worker_app, _runs_in_children
    _worker_time_limit = getattr(sender, "time_limit", None)
    _worker_app = getattr(sender, "app", None)
    if _runs_in_children is None:
        _runs_in_children = RunsUnderWay()


# billiard's child exits with -(256 - signum) on SIGTERM
_SIGTERM_EXIT = -(256 - signal.SIGTERM)
# The pool times a task from when the child took it, a little before task_prerun.
_TIMER_SLACK_S = 0.1


def _hard_time_limit(task: Any) -> float | int | None:
    """The hard time limit of the run under way, in seconds: the one it was sent with
    (``apply_async(time_limit=...)``), else the task's, else the worker's (``--time-limit``,
    else the app's ``task_time_limit``)."""
    given = getattr(getattr(task, "request", None), "timelimit", None)
    limit = given[0] if isinstance(given, list | tuple) and given else None
    if limit is None:
        limit = getattr(task, "time_limit", None)
    if limit is None:
        limit = _worker_time_limit
    if limit is None:
        limit = getattr(getattr(getattr(task, "app", None), "conf", None), "task_time_limit", None)
    if not isinstance(limit, int | float) or isinstance(limit, bool) or not 0 < limit < 2**31:
        return None
    return limit


def _rejection_under_way() -> BaseException | None:
    """A ``Reject`` raised by ``on_success`` or ``after_return``: Celery lets it through and
    sends ``task_postrun`` from a ``finally`` on the way, with the state the task function
    reached (SUCCESS), while the worker rejects the message."""
    from celery.exceptions import Reject

    raised = sys.exc_info()[1]
    return raised if isinstance(raised, Reject) else None


def _rejection(state: object, retval: object) -> BaseException | None:
    """A task that raised ``Reject`` did not process its message (requeued, or dropped to a
    dead-letter queue): failed with the reason given, when that is an exception, else the
    ``Reject``. (``Ignore``, a task's deliberate skip, is not a failure.)"""
    if state != "REJECTED" or not isinstance(retval, BaseException):
        return None
    reason = getattr(retval, "reason", None)
    return reason if isinstance(reason, BaseException) else retval


@guarded(None)
def _task_revoked(
    request: Any = None, sender: Any = None, terminated: Any = False, expired: Any = False, **_: Any
) -> None:
    """A task the worker discarded instead of running (revoked, or expired while it waited): a
    CONSUMER span that ends at once, so the trace says where the task went. One terminated while
    it ran already has its span, from the run."""
    if request is None or terminated:
        return
    attributes = {**_task(getattr(sender, "name", None)), TASK_STATE: "REVOKED"}
    error = _expiry() if expired else None
    _record_discard(request, _message_headers(request), attributes, error, app=_app_of(sender))


@guarded(None)
def _task_unknown(message: Any = None, name: Any = None, **sent: Any) -> None:
    """A task name the worker has not registered: it logs the message and drops it, and the
    caller's ``result.get()`` raises ``NotRegistered``. A failed CONSUMER span ends the path."""
    headers = getattr(message, "headers", None)
    if not isinstance(headers, Mapping):
        return
    attributes = {**_task(name), TASK_STATE: "FAILURE"}
    error = _not_registered(name)
    _record_discard(message, _raw_message_headers(headers), attributes, error, sent.get("id"))


@guarded(None)
def _task_rejected(message: Any = None, exc: Any = None, **_: Any) -> None:
    """A message the worker would not take as a task (content it does not accept, such as
    pickle for a JSON-only worker; an invalid or unknown message): it logs and drops it, and
    the caller's ``result.get()`` never returns. A failed CONSUMER span ends the path."""
    headers = getattr(message, "headers", None)
    if not isinstance(headers, Mapping):
        return
    attributes = {**_task(headers.get("task")), TASK_STATE: "REJECTED"}
    error = exc if isinstance(exc, BaseException) else _not_a_task()
    _record_discard(message, _raw_message_headers(headers), attributes, error, headers.get("id"))


def _raw_message_headers(headers: Mapping[Any, Any]) -> dict[str, Any]:
    """The headers tracekit reads, from a message the worker did not turn into a request: by
    their exact names first, as a request's attributes are, then in any spelling. Only those the
    message has: one it lacks is no header whose value tracekit would refuse (every message
    without a ``tracestate`` made the worker warn "ignored message header tracestate")."""
    found = {field: headers.get(field) for field in _header_names()}
    _fill_from(found, headers)
    return {name: value for name, value in found.items() if value is not None}


def _record_discard(
    message: Any,
    headers: Mapping[str, Any],
    attributes: Mapping[str, str | bool],
    error: BaseException | None,
    task_id: object = None,
    app: Any = None,
) -> None:
    """A CONSUMER span that ends at once, for a task message the worker did not run (``app``:
    its task's, default the worker's)."""
    present = {k: v for k, v in headers.items() if v is not None}
    present.pop(FIRST_ATTEMPT_HEADER, None)
    delivery = messaging.consume(
        present,
        system=SYSTEM,
        destination=_queue_of(message, app if app is not None else _worker_app),
        message_id=task_id if task_id is not None else getattr(message, "id", None),
        attributes=attributes,
        due_unix_nano=_due_of(message),
    )
    delivery.start()
    delivery.end(error)


def _expiry() -> BaseException:
    """What the caller's ``result.get()`` raises for a task that expired in the queue."""
    from celery.exceptions import TaskRevokedError

    error: BaseException = TaskRevokedError("expired")
    return error


def _not_a_task() -> BaseException:
    """What a message that is no task message (no task name: sent to the wrong queue) is."""
    from celery.exceptions import InvalidTaskError

    error: BaseException = InvalidTaskError("not a task message")
    return error


def _not_registered(name: object) -> BaseException:
    """What the caller's ``result.get()`` raises for a task the worker does not know."""
    from celery.exceptions import NotRegistered

    error: BaseException = NotRegistered(str(name)[:256])
    return error
