"""A queue inside one app process, with a tracekit queue hop across it (for test apps).

``publish(item)``, called in a request handler, opens the PRODUCER span and writes the message
headers (``tracekit.messaging.publish``); a consumer thread handles each item inside
``tracekit.messaging.consume``, after ``wait_s`` (a measurable queue wait). A handler that raises
``ValueError`` fails its message, which the CONSUMER span records, and the thread goes on.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from tracekit import messaging

SYSTEM = "inproc"
T = TypeVar("T")


class InProcessQueue(Generic[T]):
    def __init__(self, destination: str, handle: Callable[[T], None], wait_s: float = 0.0):
        self.destination = destination
        self._handle = handle
        self._wait_s = wait_s
        self._inbox: queue.Queue[tuple[dict[str, str], T] | None] = queue.Queue()

    def publish(self, item: T) -> None:
        headers: dict[str, str] = {}
        with messaging.publish(headers, system=SYSTEM, destination=self.destination):
            self._inbox.put((headers, item))

    @contextlib.contextmanager
    def consuming(self) -> Iterator[None]:
        """A consumer thread while the block runs (an app's lifespan), then it drains and ends."""
        consumer = threading.Thread(target=self._consume_forever, daemon=True)
        consumer.start()
        try:
            yield
        finally:
            self._inbox.put(None)
            consumer.join(5)

    def _consume_forever(self) -> None:
        while (entry := self._inbox.get()) is not None:
            headers, item = entry
            if self._wait_s:
                time.sleep(self._wait_s)
            with (
                contextlib.suppress(ValueError),
                messaging.consume(headers, system=SYSTEM, destination=self.destination),
            ):
                self._handle(item)
