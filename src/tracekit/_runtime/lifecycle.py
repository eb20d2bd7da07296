"""Flushing before the process stops: every way a service's process ends gracefully.

The batch processors hold up to ``OTEL_BSP_SCHEDULE_DELAY`` of spans (and log records); a process
that ends without flushing loses them. ``install`` (called by ``tracekit.init()``) hooks each
way out, preferring the host's own extension points over its signals:

- interpreter exit: ``atexit`` (gunicorn workers and master leave through ``sys.exit``, Celery's
  main process too). A flush, not a stop: the exit hooks registered before ``init`` run after
  tracekit's, and what they emit is flushed when logging's exit hook closes its handlers, or
  as it comes after that (``state.flush_at_exit``);
- ASGI servers: the lifespan protocol's shutdown (``lifespan_send``; uvicorn then re-raises
  SIGTERM, which ends the process without exit hooks); uvicorn: also the end of its own
  shutdown, for an application without a lifespan shutdown (Django's) in a worker, which
  imported it after uvicorn took SIGTERM, so that tracekit's handler is not there;
- Celery: ``worker_process_shutdown`` in a prefork child (which ends with ``os._exit``) and
  ``worker_shutdown`` in the main process;
- multiprocessing children, which also end with ``os._exit``: a multiprocessing finalizer
  (a forked one also starts outside the request its parent was in, as a spawned one does);
- SIGTERM, only where nobody handles it (the default action, which would end the process at
  once): flush, then restore the default and raise the signal again, so the exit status is the
  one it would have been. When a stop is already under way, the signal is raised again once it
  is done (``Pool.terminate()`` signals workers that are already stopping). A watcher thread
  hears of SIGTERM on a wakeup fd and wakes the main thread when it was blocked as the signal
  landed, so that the handler runs (it runs between bytecodes of the main thread). An asyncio
  loop that set its own wakeup fd clears it as it closes: tracekit's is set again then.

Every flush and stop is bounded by the SDK's export timeout (``OTEL_BSP_EXPORT_TIMEOUT``).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable
from types import FrameType, ModuleType
from typing import Any, cast

import wrapt
from opentelemetry import context as otel_context

from tracekit import correlation
from tracekit._http.asgi_types import Message, Send
from tracekit._runtime import state, unfinished
from tracekit._runtime.guard import guarded, safe

_LIFESPAN_ENDS = frozenset(("lifespan.shutdown.complete", "lifespan.shutdown.failed"))
_installed = False
_terminating = False
_sigterms_handled = 0  # runs of _on_sigterm, for the watcher to tell one that ran (below)


def install() -> None:
    """Hook every way this process can end (once per process; SIGTERM on every init)."""
    global _installed
    _hook_sigterm()
    if _installed:
        return
    _installed = True
    atexit.register(_flush_at_exit)
    os.register_at_fork(after_in_child=_watch_in_child)
    wrapt.register_post_import_hook(_hook_celery, "celery.signals")
    wrapt.register_post_import_hook(_hook_multiprocessing, "multiprocessing.util")
    wrapt.register_post_import_hook(_hook_asyncio, "asyncio.unix_events")
    wrapt.register_post_import_hook(_hook_uvicorn, "uvicorn.server")


def uninstall() -> None:
    """Give SIGTERM back its default action if tracekit's handler is still the one installed."""
    if _in_main_thread() and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def lifespan_send(send: Send) -> Send:
    """Wrap an ASGI lifespan ``send``: flush before the server hears that shutdown is done."""

    async def send_after_flushing(message: Message) -> None:
        if message.get("type") in _LIFESPAN_ENDS:
            # Blocking, on purpose: at lifespan shutdown every request has finished, and the
            # server may end the process (uvicorn re-raises SIGTERM) as soon as it is told.
            # A step of the stop: the flush at that SIGTERM shares its export timeout.
            _flush_for_stop()
        elif message.get("type") == "lifespan.startup.complete":
            # The application serves again (a test harness running it more than once): a
            # collector that hung at an earlier stop leaves this one its whole export timeout.
            state.stop_outlived()
        await send(message)

    return send_after_flushing


@guarded(None)
def _hook_uvicorn(server: ModuleType) -> None:
    wrapt.wrap_function_wrapper(server.Server, "shutdown", _flush_after_shutdown)


async def _flush_after_shutdown(
    wrapped: Callable[..., Any], server: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """uvicorn has answered its last requests and run the lifespan shutdown, if any: flush
    before it raises the signal that stopped it again with the action it found, the default in
    a worker of ``--workers`` (a step of the stop: after a lifespan flush, this one has nothing
    left). A server stopped without a signal (``should_exit``: one run in a thread by tests or a
    notebook) is no end of the process: its stop waits for no export (a collector not running
    made each such stop 7 s long)."""
    try:
        await wrapped(*args, **kwargs)
    finally:
        if getattr(server, "_captured_signals", None):  # the signals uvicorn raises again
            _flush_for_stop()


@guarded(None)
def _flush() -> None:
    state.flush_current()


@guarded(None)
def _flush_at_exit() -> None:
    global _exit_hooks_end
    _exit_hooks_end = _ExitHooksEnd()  # first: the late records must have their last flush
    state.flush_at_exit()


class _ExitHooksEnd(logging.Handler):
    """Handles no record; it only hears when logging's exit hook runs. Made at exit, it is among
    the handlers ``logging.shutdown`` closes, and that hook (registered when logging was
    imported, before tracekit's) runs after the hooks that emit late records."""

    def emit(self, record: logging.LogRecord) -> None:
        pass

    def close(self) -> None:
        _exit_hooks_ending()
        super().close()
        _forget_handler(self)


def _forget_handler(handler: logging.Handler) -> None:
    """Take ``handler`` out of logging's list of every handler once it is closed at exit. Left
    there, logging's callback runs when the interpreter collects the handler as it clears its
    modules: under gevent patched after the fork (gunicorn's gevent worker) that callback takes
    a lock whose ``get_ident`` is gone by then, and every worker ended with a traceback."""
    handlers = getattr(logging, "_handlerList", [])  # (weak references, in every Python)
    for ref in [ref for ref in handlers if ref() is handler]:
        handlers.remove(ref)


_exit_hooks_end: _ExitHooksEnd | None = None


@guarded(None)
def _exit_hooks_ending() -> None:
    # The exit hooks are done: a handler still running is a daemon thread's (the others were
    # joined before them), which the interpreter stops where it is. Recorded now, its span
    # goes out with the late records.
    _record_unfinished("the process exited")
    state.exit_hooks_ending()


@guarded(None)
def _stop(*_: Any, **__: Any) -> None:
    state.stop_current()


# --- SIGTERM ------------------------------------------------------------------------------------


def _in_main_thread() -> bool:
    """Whether this runs on the main thread, the one that may set signal handlers. eventlet's
    monkey-patching gives ``threading`` a main thread object of its own, which
    ``current_thread()`` never is: there, the system's thread id tells (an eventlet process got
    no SIGTERM handler, and lost what was batched at every stop). The id alone would not do: a
    child of ``fork()`` keeps its parent's in ``main_thread()`` (Python 3.11)."""
    main = threading.main_thread()
    return threading.current_thread() is main or threading.get_native_id() == main.native_id


def _hook_sigterm() -> None:
    """Handle SIGTERM only where its action is the default; a host's own handler stays."""
    if _in_main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
        _watch_sigterm()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Flush (bounded), then let SIGTERM do what it would have done without us."""
    global _terminating, _sigterms_handled
    spawn = _event_loop_spawn()
    if spawn is not None:
        # Called in gevent's or eventlet's event loop, where nothing may wait (the flush waits
        # for its exports): a server of theirs (gevent.pywsgi, eventlet.wsgi) died of the
        # library's error, with a traceback and exit status 1. The loop goes on meanwhile.
        spawn(_on_sigterm, signum, frame)
        return
    _sigterms_handled += 1
    if signal.getsignal(signum) is not _on_sigterm:
        # A handler the host installed after init called ours, the one it replaced: what
        # happens next is its decision (raising SIGTERM again would only call it again).
        _bounded(_flush)
        return
    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    if not _terminating:
        _terminating = True
        # A stop already under way (an exit hook, a multiprocessing finalizer, shutdown()),
        # perhaps the very frame this signal interrupted: SIGTERM ends the process when it is
        # done, not in the middle of its exports.
        if state.when_stops_end(lambda: _raise_again(signum)):
            return
        # A flush, not a stop: the process may outlive the signal (below).
        _bounded(_flush_before_default_action)
    _raise_again(signum)


_NO_EVENT_LOOP: Callable[..., object] | None = None


@guarded(_NO_EVENT_LOOP)
def _event_loop_spawn() -> Callable[..., object] | None:
    """gevent's or eventlet's ``spawn`` when this runs in that library's event loop (its hub,
    where a signal handler of a monkey-patched process usually runs), else None."""
    gevent: Any = sys.modules.get("gevent")
    if gevent is not None and isinstance(gevent.getcurrent(), gevent.hub.Hub):
        return cast("Callable[..., object]", gevent.spawn)
    eventlet: Any = sys.modules.get("eventlet")
    if eventlet is not None and eventlet.hubs.get_hub().greenlet is eventlet.getcurrent():
        return cast("Callable[..., object]", eventlet.spawn)
    return None


@guarded(None)
def _flush_before_default_action() -> None:
    """SIGTERM's default action ends the process next, handlers of messages and all: their
    spans would never end, so they are recorded now (failed), then flushed. Not in a PID 1,
    which that action does not end: its handlers go on and end their spans themselves."""
    if os.getpid() != 1:  # (a failure here must not cost the flush)
        # First the sends a producer took, waiting for their outcome: not cut short, unknown.
        state.record_awaiting()
        _record_unfinished("SIGTERM ended the process")
    state.flush_for_stop()


def _record_unfinished(cause: str) -> None:
    """End the spans still open (``unfinished.record_all``) in a thread of its own, waited for a
    second at most: the thread SIGTERM interrupted may hold the lock of a span it was writing to
    (inside ``set_attribute``), and that span's end waits for it, while it waits for this flush.
    The stop took the whole export timeout then, and flushed nothing at all. At exit, a daemon
    thread may be parked inside that lock: ended on the main thread, the exit never ended."""
    state.bounded(
        lambda: safe("unfinished spans", lambda: unfinished.record_all(cause)), "tracekit-record"
    )


def _raise_again(signum: int) -> None:
    """SIGTERM with its default action, as without tracekit; then, if the process is still
    here, tracekit's handler again."""
    global _terminating
    signal.raise_signal(signum)
    # Still here: SIGTERM's default action did nothing, as for the first process of a PID
    # namespace (a container's PID 1 without an init) until SIGKILL. The process goes on, and
    # so does tracekit, exporting what ends as it ends (SIGKILL comes unannounced), and ready to
    # flush at the next SIGTERM. (Raised again after a stop, this may run in the thread that
    # ended it: only the main thread may set a handler, and the next init puts it back.)
    safe("export as spans end", state.export_as_they_end)
    if _in_main_thread() and signal.getsignal(signum) is signal.SIG_DFL:
        signal.signal(signum, _on_sigterm)
    _terminating = False
    state.stop_outlived()


# --- SIGTERM noted while the main thread is blocked -------------------------------------------
# CPython notes a signal at once but runs its Python handler only between bytecodes of the main
# thread. A SIGTERM noted while the main thread is blocked (delivered to another thread, or just
# before the wait began: a pool worker waiting for its next task when the pool is terminated) was
# never handled: the process outlived it, where the default action would have ended it.

_NUDGE_AFTER_S = 1.0  # a handler that has not run by then is not going to run by itself
# This process's wakeup socket pair, when ours: what the watcher reads, and the wakeup fd. The
# fd stays open for the life of the process (a signal may come until its very end), so no
# socket object owns it, to be collected unclosed at exit (a ResourceWarning).
_wakeup: tuple[socket.socket, int] | None = None


@guarded(None)
def _watch_sigterm() -> None:
    """Hear of SIGTERM on a wakeup fd (main thread only; never over one the host has set)."""
    global _wakeup
    if _wakeup is not None:
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    hosts = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    if hosts != -1:
        # An event loop's (asyncio's add_signal_handler): it hears of its signals there and
        # wakes its own main thread. Put back, it goes on hearing of them.
        signal.set_wakeup_fd(hosts)
        reader.close()
        writer.close()
        return
    _wakeup = reader, writer.detach()
    green_spawn = _green_threads_spawn()
    if green_spawn is not None:
        green_spawn(_nudge_on_sigterm, reader)
        return
    thread = threading.Thread(
        target=_nudge_on_sigterm, args=(reader,), name="tracekit-sigterm", daemon=True
    )
    thread.start()


_NO_GREEN_THREADS: Callable[..., object] | None = None


@guarded(_NO_GREEN_THREADS)
def _green_threads_spawn() -> Callable[..., object] | None:
    """gevent's or eventlet's ``spawn`` when that library made ``threading``'s threads green
    (monkey-patching), else None. A green thread is copied into a child of ``fork()`` with the
    process: a ``threading.Thread`` copied there that ends fails in threading's record of the
    fork's threads (a ``KeyError`` and its traceback in every gunicorn ``--preload`` worker)."""
    gevent_monkey: Any = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("threading"):
        return cast("Callable[..., object]", sys.modules["gevent"].spawn)
    eventlet_patcher: Any = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched("thread"):
        return cast("Callable[..., object]", sys.modules["eventlet"].spawn)
    return None


def _nudge_on_sigterm(reader: socket.socket) -> None:
    """Interrupt the main thread's wait when SIGTERM came and its handler has not run."""
    main = threading.main_thread().ident
    handled = _sigterms_handled
    while signals := _received(reader):
        if signal.SIGTERM in signals:
            time.sleep(_NUDGE_AFTER_S)
            # Not handled since the last SIGTERM heard (a handler that ran may have put itself
            # back: a container's PID 1 outlives SIGTERM), and the handler is still ours.
            if _sigterms_handled == handled and _handler_is_ours() and main is not None:
                signal.pthread_kill(main, signal.SIGTERM)
            handled = _sigterms_handled


def _received(reader: socket.socket) -> bytes:
    """The signal numbers the wakeup fd brought; none once ``reader`` is closed: under it, in a
    child of ``fork()`` that copied this watcher with its green threads (``_watch_in_child``)."""
    try:
        return reader.recv(64)
    except OSError:
        return b""


def _handler_is_ours() -> bool:
    return signal.getsignal(signal.SIGTERM) is _on_sigterm


@guarded(None)
def _hook_asyncio(unix_events: ModuleType) -> None:
    # The only way to hear that a loop cleared the wakeup fd: CPython tells no one (no audit
    # event), and no thread but the main one may even read which fd is set.
    wrapt.wrap_function_wrapper(
        unix_events.SelectorEventLoop, "remove_signal_handler", _watch_again_after
    )


def _watch_again_after(
    wrapped: Callable[..., bool], loop: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> bool:
    """An asyncio loop's last signal handler goes (as the loop closes): the loop cleared the
    wakeup fd it had set over tracekit's, so tracekit heard of SIGTERM no more. While the loop
    keeps other handlers its fd stays, and is left alone: putting tracekit's in to read which
    is set would, for that instant, send a signal of the loop's to tracekit's socket."""
    removed = wrapped(*args, **kwargs)
    if not getattr(loop, "_signal_handlers", None):  # asyncio's own record of them
        _watch_again()
    return removed


@guarded(None)
def _watch_again() -> None:
    """Put tracekit's wakeup fd back where none is set any more (a fd someone else set stays),
    or start watching if ``init`` found one set."""
    if not (_in_main_thread() and _handler_is_ours()):
        return
    if _wakeup is None:
        _watch_sigterm()
        return
    writer = _wakeup[1]
    current = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
    if current not in (-1, writer):
        signal.set_wakeup_fd(current)


@guarded(None)
def _watch_in_child() -> None:
    """A forked child shares its parent's wakeup socket, not its watcher thread: the parent's
    watcher would hear the child's SIGTERM. The child watches with its own."""
    global _wakeup
    if _wakeup is None:
        return
    reader, writer = _wakeup
    _wakeup = None
    current = signal.set_wakeup_fd(-1)
    ours = current == writer
    if not ours:  # replaced since (an event loop's): it stays
        signal.set_wakeup_fd(current)
    reader.close()  # the parent's watcher reads it: of no use here, and open for good
    os.close(writer)
    if ours and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        _watch_sigterm()


def _bounded(action: Callable[[], None]) -> None:
    """Run ``action`` (a stop or a flush) in a helper thread, waited for until the export
    timeout: the interrupted main thread may hold a lock it needs."""
    state.bounded(action, "tracekit-stop", state.export_timeout_millis() / 1000)


# --- Celery and multiprocessing ---------------------------------------------------------------


@guarded(None)
def _hook_celery(signals: ModuleType) -> None:
    # A prefork child ends with os._exit right after this signal: no exit hook runs after it.
    signals.worker_process_shutdown.connect(
        _stop, weak=False, dispatch_uid="tracekit.lifecycle.worker_process_shutdown"
    )
    # The main process: flush only (an in-process test worker goes on living); atexit stops.
    signals.worker_shutdown.connect(
        _flush_receiver, weak=False, dispatch_uid="tracekit.lifecycle.worker_shutdown"
    )
    # ... and first as the stop begins, beside the pool's children stopping (each flushing its
    # own): with a collector that hangs, one export timeout passes for them all, not one for
    # the children and then another for the main process.
    signals.worker_shutting_down.connect(
        _flush_in_background, weak=False, dispatch_uid="tracekit.lifecycle.worker_shutting_down"
    )
    signals.worker_init.connect(
        _note_worker, weak=False, dispatch_uid="tracekit.lifecycle.worker_init"
    )


def _flush_receiver(*_: Any, **__: Any) -> None:
    _flush_for_stop()


def _flush_in_background(*_: Any, **__: Any) -> None:
    if _runs_its_tasks_itself():
        return
    # Sent from Celery's signal handler: the stop it asks for must not wait for the flush.
    threading.Thread(target=_flush_for_stop, name="tracekit-flush", daemon=True).start()


# The pools that run tasks in the worker's own process: no children flush beside it, and the
# tasks still running as the stop begins end after it. Flushed then, they went in a second
# export after the first, and a collector that hangs was waited for twice (a threads pool with
# a task running: 20 s for the 10 s of OpenTelemetry's OTLP timeout); worker_shutdown flushes
# once, after them.
_IN_PROCESS_POOLS = frozenset(
    f"celery.concurrency.{name}" for name in ("solo", "thread", "gevent", "eventlet")
)
_worker: weakref.ref[Any] | None = None  # the worker of this process (Celery's worker_init)


@guarded(None)
def _note_worker(sender: Any = None, **_: Any) -> None:
    global _worker
    _worker = weakref.ref(sender)


def _runs_its_tasks_itself() -> bool:
    """Whether this process's worker runs its tasks in its own process (pool as resolved by
    then: a class; false where the worker is not known)."""
    worker = _worker() if _worker is not None else None
    pool = getattr(worker, "pool_cls", None)
    return getattr(pool, "__module__", None) in _IN_PROCESS_POOLS


@guarded(None)
def _flush_for_stop() -> None:
    state.flush_for_stop()


class _ForkToken:
    """What multiprocessing's after-fork registry holds (it keeps only a weak reference)."""


_FORK_TOKEN = _ForkToken()


@guarded(None)
def _hook_multiprocessing(util: ModuleType) -> None:
    import multiprocessing

    util.register_after_fork(_FORK_TOKEN, _in_forked_child)
    if multiprocessing.parent_process() is not None:  # init ran inside a child
        _in_child(_FORK_TOKEN)


def _in_forked_child(token: object) -> None:
    """A multiprocessing child starts outside the request (or message) its parent was handling
    as it forked, as a spawned child does: a pool (``ProcessPoolExecutor``, ``Pool``) forked in
    the first request that used it works for every later one, whose log lines, spans and
    outgoing headers then carried that first request's IDs."""
    otel_context.attach(otel_context.Context())
    correlation._set_checked(correlation._NEVER_SET)
    _in_child(token)


def _in_child(_: object) -> None:
    """In a multiprocessing child (which ends with os._exit): stop when it finishes."""
    import multiprocessing.util

    # A negative priority runs after the children's own finalizers (pools, queues).
    multiprocessing.util.Finalize(None, _stop, exitpriority=-100)
    # A fork server's child: forked while the server's own wakeup fd was set (so not watched
    # then, ``_watch_in_child``), and cleared since. It has tracekit's handler all the same.
    if _in_main_thread() and _handler_is_ours():
        _watch_sigterm()
