"""Warnings about untrusted input that name what was refused and why, at most once a minute."""

from __future__ import annotations

import logging
import threading
import time

_log = logging.getLogger("tracekit")
_SUPPRESSED = "; %d more such warnings suppressed"


class RateLimitedWarning:
    """At most one warning per interval; the next one says how many were suppressed, if any.

    ``message`` takes the field's name and the reason: never a value.
    """

    def __init__(self, interval_s: float, message: str) -> None:
        self._interval_s = interval_s
        self._message = message
        self._lock = threading.Lock()
        self._next_at = 0.0
        self._suppressed = 0

    def warn(self, field: str, reason: str) -> None:
        with self._lock:
            now = time.monotonic()
            if now < self._next_at:
                self._suppressed += 1
                return
            suppressed, self._suppressed = self._suppressed, 0
            self._next_at = now + self._interval_s
        if suppressed:
            _log.warning(self._message + _SUPPRESSED, field, reason, suppressed)
        else:
            _log.warning(self._message, field, reason)
