"""``HeldDeliveries``: CONSUMER spans kept open between a pull API's calls.

A consume generator, ``basic_get`` or ``poll()`` hands its message back and the handler runs
after the call returns, so the message's ``Delivery`` (``_messaging.consumer``) stays open until
the consumer fetches again, closes, or is collected; and at shutdown every one still open is
ended, each in the thread that can end it.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

from tracekit._messaging.consumer import Delivery, current_delivery, put_back_left, start_held
from tracekit._runtime import state as _state
from tracekit._runtime import unfinished as _unfinished
from tracekit._runtime.guard import safe


def _take(held: dict[Any, Delivery], key: object, exiting: bool) -> Delivery | None:
    """Take ``held[key]`` to end it, unless the interpreter is ``exiting`` and a thread other
    than this one, still running, is handling it."""
    delivery = held.get(key)
    if delivery is None or (exiting and _handled_elsewhere(delivery)):
        return None
    return held.pop(key, None)


def _handled_elsewhere(delivery: Delivery) -> bool:
    """Whether a thread other than this one, still running, holds ``delivery``."""
    holder = delivery.holder
    return holder is not None and holder is not threading.current_thread() and holder.is_alive()


def _end_all(
    deliveries: list[Delivery], free: Callable[[trace.Span], bool] = lambda _: True
) -> None:
    """End each delivery (taken from its ``HeldDeliveries``) whose span, if any, is ``free``;
    the others are left open (their span lost)."""
    for delivery in deliveries:
        if delivery.span is None or free(delivery.span):
            safe("messaging consume end", delivery.end)


class HeldDeliveries:
    """At most one open ``Delivery`` per consumer object, for pull APIs without a handler block.

    A consume generator, ``basic_get`` or ``poll()`` returns a message and the handler runs after
    the call returns; its CONSUMER span must stay open until the consumer fetches the next
    message (or closes). ``hold(consumer, delivery)`` ends the consumer's previous delivery and
    starts this one; ``release(consumer)`` ends it. When consumers take turns in one thread (two
    channels polled in turn), the message fetched last is the current one; once the last held
    delivery ends, what was current before the first is back. A consumer collected without
    being closed (a worker function that returned) puts back what its delivery made current as
    it goes; the span is recorded at the next ``hold`` or ``release`` (or ``release_all``).
    """

    def __init__(self) -> None:
        # Keyed by a weak reference whose callback leaves the delivery when the consumer is
        # collected: its message's correlation ID must not stay current in the thread.
        self._weak: dict[weakref.ref[object], Delivery] = {}
        self._by_id: dict[int, Delivery] = {}  # consumers that cannot be weakly referenced
        # No lock: an allocation under it could run a collected object's __del__ that closes a
        # channel, which releases here again. Single dict operations are atomic; release_all
        # counts its runs so that a hold racing it ends what it stored.
        self._releases_all = 0
        # Span-ending steps of deliveries whose consumers were collected: run at the next hold
        # or release, never in the collection (a SimpleQueue: safe to put to from there).
        self._to_end: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def hold(self, consumer: object, delivery: Delivery) -> Delivery:
        """End ``consumer``'s open delivery, then start and keep ``delivery``."""
        self.release(consumer)
        releases_all = self._releases_all
        delivery.holder = threading.current_thread()
        start_held(delivery)
        try:
            self._weak[weakref.ref(consumer, self._collected)] = delivery
        except TypeError:
            self._by_id[id(consumer)] = delivery
        if self._releases_all != releases_all:  # uninstrumented meanwhile: end it too
            self.release(consumer)
        return delivery

    def release_all(self) -> None:
        """End every open delivery, the latest first (instrumentation being removed).

        A delivery held in another thread or task gets its span ended, but only that thread
        can put its own context back: there the message's ID stays current until it next
        consumes through tracekit, or ends. At the interpreter's exit, a delivery that another
        thread still running holds is left open: a daemon thread's handler, which the exit
        stops where it is, recorded as interrupted once the exit hooks are done
        (``unfinished.record_all``), not as handled. Otherwise the deliveries other threads
        hold are ended in a thread of their own, waited for ``state.SPAN_ENDS_BOUND_S``.
        """
        self._releases_all += 1
        while True:
            try:  # another thread may hold or release meanwhile: take a stable snapshot
                consumers, ids = [*self._weak.keys()], [*self._by_id]
                break
            except RuntimeError:
                continue
        exiting = _state.exiting()
        ended = [_take(self._weak, ref, exiting) for ref in consumers] + [
            _take(self._by_id, i, exiting) for i in ids
        ]
        here: list[Delivery] = []
        elsewhere: list[Delivery] = []
        for delivery in reversed(ended):
            if delivery is not None:  # popped here, so ended once, here
                (elsewhere if _handled_elsewhere(delivery) else here).append(delivery)
        _end_all(here)
        if elsewhere:
            # That thread may be parked inside its span's lock (set_attribute reading a lazy
            # sequence): the span's end would wait for it, and the stop with it, for ever. Where
            # no thread may start (Python 3.12.0 and 3.12.1 at exit) only the lock check bounds it.
            _state.bounded(lambda: _end_all(elsewhere, _unfinished.free), "tracekit-release")
        self._end_collected()

    def release(self, consumer: object, error: BaseException | None = None) -> None:
        """End ``consumer``'s open delivery, if any. Called as a consumer fetches again: first,
        what a delivery ended from another thread (a shutdown closing the consumer there) left
        current in this one is put back, even if the fetch then fails."""
        if current_delivery() is not None:  # (none outside a handler: no call to guard)
            safe("messaging consume end", put_back_left)
        try:
            delivery = self._weak.pop(weakref.ref(consumer), None)
        except TypeError:
            delivery = None
        delivery = delivery or self._by_id.pop(id(consumer), None)
        if delivery is not None:
            delivery.end(error)
        if not self._to_end.empty():
            self._end_collected()

    def release_then_call(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        """A wrapt wrapper for a consumer's call that means it is done with its message (its
        ``close()``, its next read): ``release(instance)``, then the call."""
        self.release(instance)
        return wrapped(*args, **kwargs)

    def held_by(self, consumer: object) -> Delivery | None:
        """``consumer``'s open delivery, if any."""
        try:
            delivery = self._weak.get(weakref.ref(consumer))
        except TypeError:
            delivery = None
        return delivery or self._by_id.get(id(consumer))

    def _collected(self, consumer: weakref.ref[object]) -> None:
        """The consumer was collected with its delivery open: what the delivery made current
        is put back now (when collected in the thread that held it); its span ends later."""
        delivery = self._weak.pop(consumer, None)
        if delivery is not None:
            self._to_end.put(delivery.leave())

    def _end_collected(self) -> None:
        while True:
            try:
                end_span = self._to_end.get_nowait()
            except queue.Empty:  # (another thread may take the last one first)
                return
            safe("messaging consume end", end_span)
