"""Label values a scrape can carry: bounded in number and length, safe to print.

``BoundedLabel`` caps the distinct values of an open-ended label (a route, a destination, a
peer's status code) in one process; ``label_value`` makes any value text a scrape can hold and a
terminal can show. Re-exported by ``tracekit.metrics`` (``BoundedLabel``, ``MAX_LABEL_LENGTH``,
``OTHER_VALUE``).
"""

from __future__ import annotations

import re
import threading
import weakref

MAX_LABEL_LENGTH = 128
OTHER_VALUE = "_other"
_STATUS_LABELS = {code: str(code) for code in range(100, 600)}

_every_bounded_label: weakref.WeakSet[BoundedLabel] = weakref.WeakSet()


class BoundedLabel:
    """Caps the distinct values one open-ended label takes in this process.

    The first ``limit`` values pass through (truncated to ``MAX_LABEL_LENGTH``); later new values
    collapse into ``OTHER_VALUE``, so a misbehaving caller can add at most one extra series.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()  # the values passed through so far (read-only to callers)
        self._lock = threading.Lock()
        _every_bounded_label.add(self)

    def renew_lock(self) -> None:
        """A new lock, in a forked child: one a thread of the parent held at the fork (a call
        it was counting) would stay held there for ever."""
        self._lock = threading.Lock()

    def __call__(self, value: object) -> str:
        if value in self.seen:  # the usual case; every member is already a safe label value
            return value
        value = label_value(value)
        return value if self.admit(value) else OTHER_VALUE

    def admit_recorded(self, value: str) -> None:
        """Count ``value``, a label value already recorded (by another process), against the
        limit; ``OTHER_VALUE`` is no value of its own."""
        if value != OTHER_VALUE:
            self.admit(value)

    def admit(self, key: str) -> bool:
        """Whether ``key`` is one of the first ``limit`` distinct keys (remembered if it is)."""
        if key in self.seen:
            return True
        with self._lock:
            if len(self.seen) >= self.limit:
                return False
            self.seen.add(key)
        return True


def label_value(value: object) -> str:
    """``value`` as text cut to ``MAX_LABEL_LENGTH`` characters, every control character (and
    what UTF-8 cannot encode) read as ``?``.

    Exposition writes text: a value of another type (a Redis stream key as ``bytes``) or one
    holding a lone surrogate (bytes decoded with ``surrogateescape``: a queue name from the
    environment or a file) failed every later scrape of the process, every metric with it.
    Exposition escapes only backslash, quote and newline: a control character (a channel a
    publisher named under a pattern subscription) went out raw, to the terminal of whoever
    read the scrape, and a carriage return split the line for readers of universal newlines.
    Printed text Python calls unprintable (a no-break space, an emoji's zero-width joiner, a
    character newer than its Unicode tables) is kept: its series keeps its name.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif not isinstance(value, str):
        value = str(value)
    value = value[:MAX_LABEL_LENGTH]
    if value.isprintable():  # the usual case; a lone surrogate is not printable
        return value
    return _UNSAFE_IN_LABEL.sub("?", value)


# C0 and C1 controls and DEL (terminal escapes, carriage return), lone surrogates, the line and
# paragraph separators that str.splitlines breaks at, and bidirectional overrides and isolates
# (which make a terminal show the line in another order than it is written)
_UNSAFE_IN_LABEL = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def destination_key(host: str, port: str) -> str:
    """One key per (host, port) pair, whatever characters either holds."""
    return f"{len(host)}:{host}{port}"


def server_error_type(status_code: int, error: BaseException | None) -> str:
    """OpenTelemetry's ``error.type`` of a server request: the exception's class when the
    application raised, else a 5xx status code (a 4xx is the client's error), else empty."""
    if error is not None:
        return type(error).__qualname__[:MAX_LABEL_LENGTH]
    return status_label(status_code) if status_code >= 500 else ""


def client_error_type(status_code: int | None, status: str, error: BaseException | None) -> str:
    """OpenTelemetry's ``error.type`` of a client call: the exception's class when the call
    raised, else the status label (``status``) of a 4xx or 5xx answer, else empty."""
    if error is not None:
        return type(error).__qualname__[:MAX_LABEL_LENGTH]
    if status_code and status_code >= 400:
        return status
    return ""


def status_label(status_code: int | None) -> str:
    """The code as a label; empty when there is none, ``_other`` outside HTTP's 100-599 (an
    application or a peer may set any number: one series each would be unbounded)."""
    return _STATUS_LABELS.get(status_code, OTHER_VALUE) if status_code else ""


def renew_locks() -> None:
    """Give every ``BoundedLabel`` a new lock, in a forked child (``BoundedLabel.renew_lock``)."""
    for label in list(_every_bounded_label):
        label.renew_lock()
