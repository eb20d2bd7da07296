"""The one object that owns what ``tracekit.init()`` started, the process's pointer to it, and
the options every part of tracekit reads (``current_options``).

A ``Runtime`` holds the options in force, tracekit's span processors, the log pipeline, the
metrics server and the instrumented libraries. ``tracekit.shutdown()`` stops exactly that, once;
the next ``init`` builds a fresh runtime.

The SDK cannot remove a processor from a tracer provider, so tracekit adds a single
``RuntimeSpanProcessor`` to a provider, once per process, and it forwards to the running
runtime's processors: init/shutdown cycles never pile processors up, and a span that ends after
``shutdown`` goes nowhere instead of into a stopped processor ("Shutdown called, ignoring Span").
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from tracekit import config
from tracekit._runtime.guard import report_once

_log = logging.getLogger("tracekit")

if TYPE_CHECKING:
    from tracekit.config import Options
    from tracekit.metrics import MetricsServer

DEFAULT_TIMEOUT_MS = 30_000  # the SDK's default export timeout
# The longest a thread may wait (about 292 years): a longer timeout raises OverflowError in the
# wait itself, which a "never give up" OTEL_BSP_EXPORT_TIMEOUT made of every stop and flush
LONGEST_WAIT_MS = int(threading.TIMEOUT_MAX * 1000)


def export_timeout_millis() -> int:
    """The SDK's export timeout (``OTEL_BSP_EXPORT_TIMEOUT``): the bound of a flush or stop,
    at most what a thread can wait."""
    try:
        value = int(os.environ.get("OTEL_BSP_EXPORT_TIMEOUT", DEFAULT_TIMEOUT_MS))
    except ValueError:
        return DEFAULT_TIMEOUT_MS
    return min(value, LONGEST_WAIT_MS) if value > 0 else DEFAULT_TIMEOUT_MS


class Deadline:
    """What is left of a time budget, in the milliseconds the SDK's calls take."""

    def __init__(self, timeout_millis: int) -> None:
        self._end = time.monotonic() + timeout_millis / 1000

    def left_millis(self) -> int:
        return max(0, int((self._end - time.monotonic()) * 1000))


class Runtime:
    """Everything one ``tracekit.init()`` started; ``stop`` undoes it once."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.span_processors: tuple[SpanProcessor, ...] = ()
        self.logs_started = False
        self.metrics_server: MetricsServer | None = None
        self.instrumented: tuple[str, ...] = ()
        self._stopped = False
        self._lock = threading.Lock()

    @property
    def stopped(self) -> bool:
        """True once ``stop`` has run."""
        return self._stopped

    def flush(self, timeout_millis: int | None = None) -> None:
        """Export the spans and log records still batched, side by side (a backend that hangs
        must not use up the other's time); everything keeps running."""
        deadline = Deadline(timeout_millis or export_timeout_millis())
        spans: list[tuple[str, Any]] = [("span flush", lambda: _flush_spans(deadline))]
        logs: list[tuple[str, Any]] = []
        if self.logs_started:
            logs = [("log flush", lambda: _part("logs").flush(deadline.left_millis()))]
        _within(deadline, spans, logs)

    def stop(self, timeout_millis: int | None = None) -> None:
        """Flush and close everything this runtime started, in dependency order. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        with _stops.running():
            self._stop(timeout_millis)

    def _stop(self, timeout_millis: int | None) -> None:
        deadline = Deadline(timeout_millis or export_timeout_millis())
        self.uninstrument()
        processors, self.span_processors = self.span_processors, ()
        # This runtime is no longer current: its processors are flushed directly (through the
        # provider, the forwarding processor would find none), then the host's, kindly.
        spans: list[tuple[str, Any]] = [
            ("span flush", lambda: _flush_processors(processors, deadline)),
            ("span flush", lambda: _flush_spans(deadline)),
            *(("span processor shutdown", processor.shutdown) for processor in processors),
        ]
        logs: list[tuple[str, Any]] = []
        if self.logs_started:  # the hooks come off now; what is batched goes out below
            detached: list[Any] = []
            _safely("logs shutdown", lambda: detached.append(_part("logs").detach()))
            logs = [("logs shutdown", p.shutdown) for p in detached if p is not None]
        # An export blocks for as long as its exporter's own timeout, retries included: the
        # deadline bounds them all; past it they go on in the background (daemon threads).
        _within(deadline, spans, logs)
        self.stop_serving_metrics()

    def stop_serving_metrics(self) -> None:
        """Close the metrics port, if this runtime serves it (or stands by to), and free it."""
        server, self.metrics_server = self.metrics_server, None
        if server is not None:
            _safely("metrics shutdown", server.close)

    def instrument(self) -> None:
        """Instrument the libraries the options select, unless they are already: ``init``
        again after ``tracekit.uninstrument()`` puts them back."""
        if self.instrumented:
            return
        instrumentation = _part("instrumentation")
        options = self.options
        self.instrumented = tuple(
            instrumentation.selected(options.instrument, options.disabled_instrumentations)
        )
        instrumentation.instrument(self.instrumented)

    def uninstrument(self) -> None:
        """Undo the instrumentation, once: what it holds open ends (``_uninstrument``)."""
        instrumented, self.instrumented = self.instrumented, ()
        if instrumented:
            _safely("uninstrument", lambda: self._uninstrument(instrumented))

    def _uninstrument(self, names: tuple[str, ...]) -> None:
        """Undo the instrumentation; the spans it ends meanwhile (deliveries held open, sends
        awaiting their reports) still reach this runtime's processors, though it is no longer
        current, instead of being dropped."""
        global _ending
        _ending = self
        try:
            _part("instrumentation").uninstrument(names)
        finally:
            _ending = None


class _StopsUnderWay:
    """How many ``Runtime.stop`` calls are running, and what to do when the last one ends.

    A SIGTERM that arrives while a stop runs (a multiprocessing worker stopping from its
    finalizer when ``Pool.terminate()`` signals it) must not end the process in the middle of
    that stop's exports: it waits for the stop to end instead (``lifecycle``).
    """

    def __init__(self) -> None:
        self._running = 0
        self._then: list[Callable[[], None]] = []
        # Reentrant: the signal handler may interrupt this very thread inside begin or end.
        self._lock = threading.RLock()

    @contextmanager
    def running(self) -> Iterator[None]:
        """Around a stop: the actions asked for meanwhile run when the last one ends."""
        with self._lock:
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                then, self._then = (self._then, []) if self._running == 0 else ([], self._then)
            for action in then:
                action()

    def under_way(self) -> bool:
        """Whether one runs now."""
        return self._running > 0

    def then(self, action: Callable[[], None]) -> bool:
        """Run ``action`` when the stops under way have ended; False (not kept) if none is."""
        with self._lock:
            if self._running == 0:
                return False
            self._then.append(action)
            return True


_stops = _StopsUnderWay()
_stop_flushes = _StopsUnderWay()  # ``flush_for_stop`` calls running


def stopping() -> bool:
    """Whether a stop, or a flush as a step of one, is under way: the process (or an application
    a test client served) is stopping, and its exports try an endpoint that refuses connections
    once, without waiting to retry (``export_watch``): nothing is listening, and a reload of a
    development server waited 7 s for it at every change of a file."""
    return _stops.under_way() or _stop_flushes.under_way()


def when_stops_end(action: Callable[[], None]) -> bool:
    """Run ``action`` once no ``Runtime.stop`` runs any more; False, doing nothing, if none runs
    now."""
    return _stops.then(action)


def _part(name: str) -> Any:
    return importlib.import_module(f"tracekit.{name}")


def _safely(where: str, action: Any) -> None:
    """Stopping one part must never keep the others from stopping, nor reach the host."""
    try:
        action()
    except Exception as error:
        report_once(f"tracekit {where}", error)


def _flush_processors(processors: tuple[SpanProcessor, ...], deadline: Deadline) -> None:
    for processor in processors:
        processor.force_flush(deadline.left_millis())


# The bound of a step that runs in its caller's thread, where no thread may start (below). For
# the whole process: the batch processors' own threads make the exports such a flush waits for.
_bound_of_step_here: Deadline | None = None


def in_a_thread(
    action: Callable[[], None], name: str, timeout_millis: int
) -> threading.Thread | None:
    """Run ``action`` in a daemon thread of its own, started, to be waited for ``timeout_millis``
    by the caller; None once it has run in this thread instead: at exit, Python 3.12.0 and
    3.12.1 start no thread ("can't create new thread at interpreter shutdown"), and the flush at
    exit failed with a traceback, every span and log record still batched lost. Run here, no
    export starts after ``timeout_millis`` (``out_of_time``; one under way ends by its
    exporter's own timeout): it ran unbounded, every batch waiting for that timeout in turn."""
    thread = threading.Thread(target=action, name=name, daemon=True)
    try:
        thread.start()
    except RuntimeError:
        global _bound_of_step_here
        outer, _bound_of_step_here = _bound_of_step_here, Deadline(timeout_millis)
        try:
            action()
        finally:
            _bound_of_step_here = outer
        return None
    return thread


def out_of_time() -> bool:
    """Whether a step ``in_a_thread`` could not give a thread runs past its bound: an export
    then drops its batch instead of sending it (the SDK's flush ignores its timeout)."""
    deadline = _bound_of_step_here
    return deadline is not None and deadline.left_millis() == 0


# Ending the spans still open takes milliseconds: a span's lock held longer than this is held for
# good, by a thread parked inside ``set_attribute`` or the one a signal interrupted.
SPAN_ENDS_BOUND_S = 1.0


def bounded(action: Callable[[], None], name: str, timeout_s: float = SPAN_ENDS_BOUND_S) -> None:
    """Run ``action`` in a daemon thread of its own, waited for ``timeout_s`` at most: it may
    wait for a lock that another thread (or the one asking) holds for good, and a stop or an
    exit must not wait with it. Past the bound it goes on alone, and the caller goes on."""
    thread = in_a_thread(action, name, int(timeout_s * 1000))
    if thread is not None:
        thread.join(timeout_s)


def _within(deadline: Deadline, *groups: list[tuple[str, Any]]) -> None:
    """Run each group's ``(where, action)`` steps in turn, the groups side by side in daemon
    threads, waited for until ``deadline``."""

    def run(steps: list[tuple[str, Any]]) -> None:
        for where, action in steps:
            _safely(where, action)

    workers = [
        in_a_thread(functools.partial(run, steps), "tracekit stop", deadline.left_millis())
        for steps in groups
        if steps
    ]
    for worker in workers:
        if worker is not None:
            worker.join(deadline.left_millis() / 1000)


def _flush_spans(deadline: Deadline) -> None:
    """Flush the global provider: tracekit's processors and, kindly, the host's own."""
    provider = trace.get_tracer_provider()
    flush = getattr(provider, "force_flush", None)
    if callable(flush):
        flush(deadline.left_millis())


# --- the process's pointer ----------------------------------------------------------------------

_current: Runtime | None = None
# A stopping runtime while it uninstruments: where the spans that ends still go (on_end).
_ending: Runtime | None = None
# Set when the interpreter exits: what is left of the time that flushing at exit may take.
_exit_budget: Deadline | None = None
# tracekit's tracer provider, shut down by tracekit's exit hook rather than by the SDK's own.
_provider_of_exit: TracerProvider | None = None
# The spans and log records emitted since tracekit's flush at exit and not flushed yet; at most
# one export batch of them wait (a full queue would drop some), and none once logging's exit
# hook has run (``exit_hooks_ending``).
_late_unflushed = 0
_LATE_BATCH_DEFAULT = 512  # the SDK's default OTEL_BSP_MAX_EXPORT_BATCH_SIZE and OTEL_BLRP_…
_late_batch = _LATE_BATCH_DEFAULT
_logging_shut_down = False
# Held by init and shutdown, and only while the pointer changes: a stop (a flush) never holds it.
# Reentrant: a signal handler calling shutdown() runs in the thread it interrupted, which may hold
# it already.
lock = threading.RLock()
# The thread running init, while it holds the lock; a stop asked for there waits for init's end.
_init_thread: int | None = None
_stop_after_init = False


def current() -> Runtime | None:
    """The running runtime (None before ``init`` and after ``shutdown``)."""
    return _current


def current_options(**overrides: Any) -> Options:
    """The options given to ``tracekit.init()`` (or read from the environment), with overrides."""
    runtime = _current
    base = runtime.options if runtime is not None else config.resolve()
    if not overrides:
        return base
    return config.resolve(**{**base.__dict__, **overrides})


def activate(runtime: Runtime | None) -> None:
    """Make ``runtime`` the one every part of tracekit reads (None: nothing is running)."""
    global _current
    _current = runtime


@contextmanager
def initializing() -> Iterator[None]:
    """Around ``init``, holding the lock: a stop asked for in this thread meanwhile (a signal
    handler that interrupted ``init``) is put off until ``init`` ends (``stop_put_off``)."""
    global _init_thread
    with lock:
        _init_thread = threading.get_ident()
        try:
            yield
        finally:
            _init_thread = None


def stop_put_off() -> bool:
    """True, once, when a stop was asked for while ``init`` ran: the caller stops now."""
    global _stop_after_init
    asked, _stop_after_init = _stop_after_init, False
    return asked


def _put_off_during_init() -> bool:
    global _stop_after_init
    if _init_thread != threading.get_ident():
        return False
    # A runtime half started would be stopped, then started on; and what init starts later
    # would run on unstopped.
    _stop_after_init = True
    return True


def stop_current(timeout_millis: int | None = None) -> None:
    """Stop the running runtime, if any, and clear the pointer: ``tracekit.shutdown()``. Called
    from inside ``init`` (a signal handler), the stop happens as ``init`` returns."""
    if _put_off_during_init():
        return
    with _stops.running():  # from before the pointer is cleared: a SIGTERM waits for this stop
        with lock:
            runtime = _current
            activate(None)
        if runtime is not None:
            runtime.stop(_left_of_exit_budget(timeout_millis))


def _left_of_exit_budget(timeout_millis: int | None) -> int | None:
    """After tracekit's exit hook (a later hook calling ``shutdown()``): no more than what is
    left of the time flushing at exit may take, as for every other late flush."""
    budget = _exit_budget
    if budget is None:
        return timeout_millis
    # At least a millisecond: no time given means the whole export timeout.
    return min(timeout_millis or export_timeout_millis(), max(1, budget.left_millis()))


def flush_at_exit() -> None:
    """The interpreter is exiting (tracekit's ``atexit`` hook): flush what is batched, and from
    now on flush what later spans and log records bring once the exit hooks end (``flush_late``).

    ``atexit`` runs its hooks last registered, first run: the hooks an application or a library
    registered before ``init`` run after this one, and what they emit would otherwise wait in a
    batch that never goes out. So the pipelines keep running; only the instrumentation is undone,
    as a stop would, to end the spans it holds open (a consumer's message, a send awaiting its
    delivery report), and the metrics port closed. One export timeout bounds this flush and all
    the later ones together."""
    global _exit_budget, _late_batch
    _late_batch = _export_batch_size()
    _exit_budget = Deadline(_left_of_stop_budget())
    with _stops.running():  # a SIGTERM meanwhile ends the process once this flush is done
        runtime = _current
        if runtime is not None:
            # First: a scrape from now on would be taken and then reset as the process ends,
            # and a sibling worker (multiprocess mode, a gunicorn reload) can take the port.
            runtime.stop_serving_metrics()
            runtime.uninstrument()
        if _exit_budget.left_millis() > 0:
            flush_current(_exit_budget.left_millis())
        provider = _provider_of_exit
        if provider is not None:  # the processors a host added to it; tracekit's runs on
            _safely("tracer provider shutdown", provider.shutdown)


# How long the flushes of a stopping process (Celery's worker shutdown; an ASGI server's lifespan
# shutdown, then the SIGTERM uvicorn raises again) waited for an export that never ended within
# its timeout: a collector that takes the connection and never answers. The later flushes of
# that stop, the one at exit included, wait only what is left of one export timeout; each waited
# the whole timeout again (a Celery worker two to four times, uvicorn twice).
_stop_flushes_timed_out_s = 0.0


def flush_for_stop() -> None:
    """Flush as a step of the process stopping; the steps and the flush at exit wait one export
    timeout in all for a collector that hangs (a flush that ends in time costs nothing)."""
    global _stop_flushes_timed_out_s
    left = _left_of_stop_budget()
    if left <= 0:
        return
    record_awaiting()  # recorded now, they go out with this flush: the process may end
    started, deadline = time.monotonic(), Deadline(left)
    with _stop_flushes.running():
        flush_current(left)
    if deadline.left_millis() == 0:
        _stop_flushes_timed_out_s += time.monotonic() - started


def record_awaiting() -> None:
    """Record the sends still waiting for their delivery's outcome, outcome unknown."""
    if _current is not None:
        _safely("record awaiting", lambda: _part("instrumentation").record_awaiting())


def stop_outlived() -> None:
    """The process outlived its stop (a container's PID 1 that SIGTERM does not end): the next
    stop's flushes have a whole export timeout again."""
    global _stop_flushes_timed_out_s
    _stop_flushes_timed_out_s = 0.0


def _left_of_stop_budget() -> int:
    return max(0, export_timeout_millis() - int(_stop_flushes_timed_out_s * 1000))


def exiting() -> bool:
    """Whether the interpreter is exiting: tracekit's exit hook has run."""
    return _exit_budget is not None


def shut_down_at_exit(provider: TracerProvider) -> None:
    """Shut ``provider`` (tracekit's own, made without the SDK's exit hook) down at exit, right
    after tracekit's flush: as the SDK's hook would, but never before the hooks registered
    after tracekit's have run."""
    global _provider_of_exit
    _provider_of_exit = provider


def flush_late() -> None:
    """After ``flush_at_exit``: a span or log record was just emitted. It waits for the end of
    the exit hooks (``exit_hooks_ending``) with the others, unless a whole export batch waits
    already or that end has passed: then they are flushed now, while time is left. After a
    SIGTERM the process outlived, it is exported at once (``export_as_they_end``)."""
    global _late_unflushed
    if _exit_budget is None:
        if _ended_since_sigterm is not None:
            _ended_since_sigterm.set()
        return
    _late_unflushed += 1
    if _logging_shut_down or _late_unflushed >= _late_batch:
        _flush_late_records()


def exit_hooks_ending() -> None:
    """logging's exit hook runs (``logging.shutdown``): registered when logging was imported,
    before tracekit's hook, it runs after the hooks that emit late records. Flush them, and
    from now on flush each one as it comes (a hook registered before logging was imported
    runs after this one)."""
    global _logging_shut_down
    if _exit_budget is None:  # the host's own logging.shutdown(), or dictConfig's, not exit's
        return
    _logging_shut_down = True
    if _late_unflushed:
        _flush_late_records()


def _flush_late_records() -> None:
    global _late_unflushed
    _late_unflushed = 0
    left = _exit_budget.left_millis() if _exit_budget is not None else 0
    if left > 0:
        flush_current(left)


# --- a process that outlived SIGTERM --------------------------------------------------------------
# SIGTERM's default action does not end a container's PID 1 with no init in front of it: after
# tracekit's flush it goes on, handling messages, until it exits or the platform's SIGKILL (10 s
# later under Docker, 30 s under Kubernetes), which nothing hears. What it ended meanwhile waited
# in the batches (``OTEL_BSP_SCHEDULE_DELAY``, 5 s) and died with it: a consumer's last seconds
# of messages were missing from every path. From then on, each is exported as it ends.
_ended_since_sigterm: threading.Event | None = None
_PROMPT_EXPORTS_APART_S = 0.05  # at most 20 exports a second, however many spans end

_OUTLIVED_SIGTERM = (
    "tracekit: this process goes on after SIGTERM (%s); its spans and log records are exported"
    " as they end from now on, until it exits or is killed (SIGKILL, which loses what is still"
    " being exported). Put an init in front of it (docker run --init, tini, ECS"
    " initProcessEnabled) or stop it on SIGTERM yourself"
)


def export_as_they_end() -> None:
    """SIGTERM was outlived: export each span and log record as soon as it ends (once called,
    for the life of the process; a forked child starts without it)."""
    global _ended_since_sigterm
    if _ended_since_sigterm is not None:
        return
    _ended_since_sigterm = threading.Event()
    threading.Thread(
        target=_export_as_they_end,
        args=(_ended_since_sigterm,),
        name="tracekit-export-as-they-end",
        daemon=True,
    ).start()


def _export_as_they_end(ended: threading.Event) -> None:
    ended.wait()  # said once the process goes on working, not at the end of a server that stops
    why = "PID 1 with no init in front of it" if os.getpid() == 1 else "its default action"
    _log.warning(_OUTLIVED_SIGTERM, why)
    while True:
        ended.wait()
        ended.clear()
        _safely("export as spans end", flush_current)
        time.sleep(_PROMPT_EXPORTS_APART_S)


def _forget_sigterm_outlived() -> None:
    global _ended_since_sigterm
    _ended_since_sigterm = None  # the flushing thread is not copied into a child


os.register_at_fork(after_in_child=_forget_sigterm_outlived)


def _export_batch_size() -> int:
    """The smaller of the span and log export batch sizes (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``,
    ``OTEL_BLRP_MAX_EXPORT_BATCH_SIZE``): the SDK keeps each queue at least that long."""
    sizes = [_LATE_BATCH_DEFAULT]
    for variable in ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE"):
        # A value that is no number: the SDK refused it as init ran, or uses its default.
        with suppress(ValueError):
            sizes.append(int(os.environ.get(variable, _LATE_BATCH_DEFAULT)))
    return max(1, min(sizes))


def flush_current(timeout_millis: int | None = None) -> None:
    """Flush the running runtime; without one (the middleware on a host's own SDK setup), the
    global provider."""
    runtime = _current
    if runtime is not None:
        runtime.flush(timeout_millis)
    else:
        deadline = Deadline(timeout_millis or export_timeout_millis())
        _safely("span flush", lambda: _flush_spans(deadline))


class RuntimeSpanProcessor(SpanProcessor):
    """The one processor tracekit adds to a provider: forwards to the running runtime's."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        runtime = _current
        if runtime is not None:
            for processor in runtime.span_processors:
                processor.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        runtime = _current or _ending
        if runtime is not None:
            for processor in runtime.span_processors:
                processor.on_end(span)
        flush_late()  # the interpreter is exiting: out now, or never

    def shutdown(self) -> None:
        """The provider is shutting down: so is tracekit, unless the interpreter is exiting
        (the SDK's exit hook), where tracekit keeps exporting what later exit hooks emit."""
        if _exit_budget is None:
            stop_current()

    def force_flush(self, timeout_millis: int = DEFAULT_TIMEOUT_MS) -> bool:
        runtime = _current
        deadline = Deadline(timeout_millis)
        for processor in runtime.span_processors if runtime is not None else ():
            if not processor.force_flush(deadline.left_millis()):
                return False
        return True


_DISPATCH = RuntimeSpanProcessor()
_dispatching: weakref.WeakSet[TracerProvider] = weakref.WeakSet()


def attach_to(provider: TracerProvider) -> None:
    """Add tracekit's forwarding processor to ``provider`` unless it already has it."""
    if provider not in _dispatching:
        provider.add_span_processor(_DISPATCH)
        _dispatching.add(provider)
